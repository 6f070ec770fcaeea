"""Create, read, update and delete users and videos across a deployment's regions.

A user lives in exactly one store (their home region). A video's catalogue entry is
copied into each region it is published to; it is public content, and its only
reference to a person is the creator's id.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from fyp.catalog.models import User, UserIn, UserPatch, Video, VideoIn, VideoPatch, now_ms
from fyp.errors import AlreadyExists, UnknownUser, UnknownVideo, ValidationFailed
from fyp.filelock import open_locked, unlock
from fyp.moderation.service import video_changed, video_removed
from fyp.regions.deployment import Deployment
from fyp.sovereignty.consent_log import record_consent_changes
from fyp.storage import ErasedCounts

if TYPE_CHECKING:
    from fyp.sovereignty.erasure import Receipt

API_ACTOR = "api"
"""Who the audit log names for a change made without an API key (library use)."""
USERS_LOCK = ".users.lock"
"""In the deployment directory: held while a new user's id is checked and inserted."""
VIDEOS_LOCK = ".videos.lock"
"""The same for a new video (and a retry completing a half-published one)."""


@contextmanager
def _held(deployment: Deployment, name: str) -> Iterator[None]:
    fd = open_locked(deployment.config.root / name)
    try:
        yield
    finally:
        unlock(fd)


class Catalog:
    """Users and videos of one deployment."""

    def __init__(self, deployment: Deployment) -> None:
        self.deployment = deployment

    # -- users ----------------------------------------------------------------
    def create_user(self, data: UserIn, actor: str = API_ACTOR) -> User:
        """A new user in their home region; consents given with it are on record in the
        region's audit log (``consent.change``, by ``actor``) in the same transaction."""
        d = self.deployment
        store = d.store(data.home_region)  # UnknownRegion if not declared
        # the check and the insert under one lock of the deployment directory: two workers
        # (or hosts, or the CLI beside a server) creating one id in two regions at once
        # both found it free and both inserted it, a user with two homes
        with _held(d, USERS_LOCK):
            if d.locate_users([data.user_id], fresh=True):  # not a route to one erased since
                raise AlreadyExists(f"user {data.user_id!r} already exists", user_id=data.user_id)
            t = now_ms()
            fields = data.model_dump()
            fields["consents"] = fields["consents"] or {}
            fields["attributes"] = fields["attributes"] or {}
            user = User(**fields, created_at_ms=t, updated_at_ms=t)
            with store.transaction():
                store.insert_user(user)
                record_consent_changes(
                    d, user.home_region, user.user_id, None, user.consents, actor, created=True
                )
        return user

    def get_user(self, user_id: str) -> User:
        region = self.deployment.home_region(user_id)
        user = self.deployment.store(region).get_user(user_id)
        if user is None:  # a stale route: moved or erased since (UnknownUser if gone)
            region = self.deployment.relocate(user_id)
            user = self.deployment.store(region).get_user(user_id)
        if user is None:
            self.deployment.forget_route(user_id)
            raise UnknownUser(f"no user {user_id!r}", user_id=user_id)
        return user

    def update_user(self, user_id: str, patch: UserPatch, actor: str = API_ACTOR) -> User:
        """Apply ``patch``; a change of consents is on record in the home region's audit
        log (``consent.change``, by ``actor``), written with the profile in one
        transaction (the profile is read again inside it, so the entry's old value is
        the one replaced)."""
        user = self.get_user(user_id)
        changes = patch.model_dump(exclude_unset=True)
        for key in ("consents", "attributes"):  # null clears them, stored as {}
            if key in changes and changes[key] is None:
                changes[key] = {}
        store = self.deployment.store(user.home_region)
        with store.transaction():
            user = store.get_user(user_id) or user  # gone since: update_user says so
            # a new profile version even within the same millisecond (or after a clock
            # step back): what caches by it (the feed's profile, states, orders) sees it
            version = max(now_ms(), user.updated_at_ms + 1)
            updated = user.model_copy(update={**changes, "updated_at_ms": version})
            store.update_user(updated)
            record_consent_changes(
                self.deployment, user.home_region, user_id, user.consents, updated.consents, actor
            )
        if updated.birth_year != user.birth_year:  # a creator corrected to a minor: at once
            from fyp.moderation.service import Moderator

            moderator = Moderator(self.deployment)
            for region in self.deployment.regions:
                moderator.recheck_creators(region, "catalog", creators={user_id})
        return updated

    def delete_user(self, user_id: str) -> ErasedCounts:
        """Erase the user everywhere (see :meth:`erase_user`); the store row counts."""
        removed = self.erase_user(user_id).removed
        return ErasedCounts(
            users=removed.get("users", 0),
            events=removed.get("events", 0),
            labels=removed.get("labels", 0),
        )

    def erase_user(self, user_id: str, actor: str | None = None) -> Receipt:
        """Erase every row, file and model row about the user; a signed receipt says what.
        ``actor``: who asked, as the audit log names them (default: the erasure itself)."""
        from fyp.sovereignty.erasure import AUDIT_ACTOR, Eraser

        return Eraser(self.deployment).erase(user_id, actor or AUDIT_ACTOR)

    # -- videos ---------------------------------------------------------------
    def create_video(self, data: VideoIn) -> Video:
        _no_import_marker(data.attributes)
        for region in data.regions:
            self.deployment.store(region)
        with _held(self.deployment, VIDEOS_LOCK):  # one publisher of an id at a time
            return self._create_video(data)

    def _create_video(self, data: VideoIn) -> Video:
        d = self.deployment
        held = d.locate_video(data.video_id)
        half = self._half_published(data, held) if held else None
        if held and half is None:
            raise AlreadyExists(f"video {data.video_id!r} already exists", video_id=data.video_id)
        if data.creator_id is not None and not d.locate_users([data.creator_id], fresh=True):
            raise UnknownUser(f"creator {data.creator_id!r} is not a user", user_id=data.creator_id)
        t = now_ms()
        video = half or Video(**data.model_dump(), created_at_ms=t, updated_at_ms=t)
        written: list[str] = []
        try:
            for region in video.regions:
                if region not in held:
                    d.store(region).insert_video(video)
                    written.append(region)
        except BaseException:
            for region in written:  # best effort: no half-published video
                d.store(region).delete_video(video.video_id)
            raise
        # pending until moderated (no row would mean pending too)
        video_changed(d, video, None if half is None else ("regions",), held)
        return video

    def _half_published(self, data: VideoIn, held: list[str]) -> Video | None:
        """The video a publish killed part-way left in only some of its regions, when
        ``data`` asks for exactly it again (a retry completes it, as the ``409`` it got
        could not); None for anything else."""
        stored = self.get_video(data.video_id, held[0])
        same = Video(**data.model_dump(), created_at_ms=0, updated_at_ms=0).model_dump(
            exclude={"created_at_ms", "updated_at_ms"}
        ) == stored.model_dump(exclude={"created_at_ms", "updated_at_ms"})
        missing = set(data.regions) - set(held)
        return stored if same and missing and set(held) <= set(data.regions) else None

    def get_video(self, video_id: str, region: str | None = None) -> Video:
        regions = [region] if region else self.deployment.locate_video(video_id)
        for r in regions:
            video = self.deployment.store(r).get_video(video_id)
            if video is not None:
                return video
        where = f" in region {region!r}" if region else ""
        raise UnknownVideo(f"no video {video_id!r}{where}", video_id=video_id)

    def update_video(self, video_id: str, patch: VideoPatch) -> Video:
        current = self.get_video(video_id)
        changes = patch.model_dump(exclude_unset=True)
        if "attributes" in changes:  # an imported video stays one; nothing else becomes one
            _no_import_marker(changes["attributes"], current.attributes)
            if "source" in current.attributes:
                changes["attributes"] = {
                    **changes["attributes"],
                    "source": current.attributes["source"],
                }
        for region in changes.get("regions") or []:
            self.deployment.store(region)
        updated = current.model_copy(update={**changes, "updated_at_ms": now_ms()})
        # pending before the new content is visible anywhere
        video_changed(self.deployment, updated, changes.keys(), current.regions)
        dropped = [r for r in self.deployment.locate_video(video_id) if r not in updated.regions]
        for region in dropped:
            self.deployment.store(region).delete_video(video_id)
        video_removed(self.deployment, video_id, dropped)
        for region in updated.regions:
            self.deployment.store(region).update_video(updated)
        return updated

    def delete_video(self, video_id: str) -> list[str]:
        regions = self.deployment.locate_video(video_id)
        if not regions:
            raise UnknownVideo(f"no video {video_id!r}", video_id=video_id)
        for region in regions:
            self.deployment.store(region).delete_video(video_id)
        video_removed(self.deployment, video_id, regions)
        return regions


_NONE = object()  # no source kept: any given one is refused


def _no_import_marker(attributes: dict[str, Any], kept: dict[str, Any] | None = None) -> None:
    """``attributes.source`` marks a video an operator imported (moderation then accepts
    it without a creator account); an upload may not claim it, nor an edit change the
    ``kept`` one."""
    if "source" in attributes and attributes["source"] != (kept or {}).get("source", _NONE):
        raise ValidationFailed(
            "attributes.source is set by operator imports only",
            problems=[{"field": "attributes.source", "problem": "reserved"}],
        )
