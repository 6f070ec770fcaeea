"""Redis URLs, parsed in one place and turned into a client by one factory, so that every
command reaching a served log on Redis (the feed, erasure and its verification, the
residency scan, export, move, restore, carve-out) takes each form alike:

- ``redis://[[USER]:PASSWORD@]HOST[:PORT][/DB][?OPTIONS]`` (``rediss://`` for TLS): one
  server, as redis-py reads it;
- ``redis+sentinel://[[USER]:PASSWORD@]HOST[:PORT][,HOST[:PORT]…]/SERVICE[/DB][?OPTIONS]``
  (``rediss+sentinel://`` for TLS to the Sentinels and to the master, with the same
  ``ssl_*`` options): the master of the service the listed Sentinels monitor (``sentinel
  monitor SERVICE``), port 26379 unless given. The form of the Redis-Sentinel-Url
  package, also taken by Prefect and RedisVL. The user and password are the data
  servers' (the master's, as for ``redis://``); the ``sentinel_username`` and
  ``sentinel_password`` options are the Sentinels' own, when they ask for one. The
  client asks a Sentinel for the master whenever it connects (redis-py's
  ``Sentinel.master_for``), so after a failover a request on a dropped connection, or
  one refused by a demoted master, reconnects to the new master (one retry; a request
  during the failover itself fails, 503).
- ``redis+cluster://[[USER]:PASSWORD@]HOST[:PORT][,HOST[:PORT]…][?OPTIONS]``
  (``rediss+cluster://`` for TLS): a Redis Cluster, found from any of the listed nodes
  (redis-py's ``RedisCluster``, which follows the cluster's ``MOVED`` and ``ASK``
  redirections). A cluster has one database, 0. A served log's keys carry a hash tag
  per user, so all of one user's keys, and each of its scripts, are on one node.

Options are redis-py's URL options (``socket_timeout``…; TLS ``ssl_*`` on ``rediss://``,
``rediss+sentinel://`` and ``rediss+cluster://``)
and ``wait_replicas=N``: every write then waits until N replicas hold it (``WAIT``) or
fails (a 503; the write may still be on the master), so a failover does not lose what
was acknowledged (docs/architecture.md, "Served log on Redis"). Anything else is a
ConfigError when ``fyp.toml`` is loaded, never a traceback at the first request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import parse_qsl, quote, unquote, urlencode

from fyp.errors import ConfigError
from fyp.storage.postgres_dialect import redact

if TYPE_CHECKING:
    import redis

SENTINEL = "redis+sentinel"
TLS_SENTINEL = "rediss+sentinel"
CLUSTER = "redis+cluster"
TLS_CLUSTER = "rediss+cluster"
SENTINEL_SCHEMES = (SENTINEL, TLS_SENTINEL)
CLUSTER_SCHEMES = (CLUSTER, TLS_CLUSTER)
SCHEMES = ("redis", "rediss", *SENTINEL_SCHEMES, *CLUSTER_SCHEMES)
FORMS = (
    "redis://[:PASSWORD@]HOST[:PORT][/DB], rediss://…, "
    "redis+sentinel://[:PASSWORD@]HOST[:PORT][,HOST[:PORT]…]/SERVICE[/DB], or "
    "redis+cluster://[:PASSWORD@]HOST[:PORT][,HOST[:PORT]…] (rediss+sentinel://… and "
    "rediss+cluster://… for TLS)"
)
PORTS = {
    "redis": 6379,
    "rediss": 6379,
    SENTINEL: 26379,
    TLS_SENTINEL: 26379,
    CLUSTER: 6379,
    TLS_CLUSTER: 6379,
}
# redis-py's URL options (redis.connection.URL_QUERY_ARGUMENT_PARSERS and the credentials)
CLIENT_OPTIONS = frozenset(
    {
        "username",
        "password",
        "client_name",
        "socket_timeout",
        "socket_connect_timeout",
        "socket_keepalive",
        "socket_read_size",
        "retry_on_timeout",
        "health_check_interval",
        "max_connections",
        "protocol",
    }
)
SENTINEL_OPTIONS = frozenset({"sentinel_username", "sentinel_password"})
WAIT_TIMEOUT_MS = 500  # how long a write waits for its replicas before it fails


@dataclass(frozen=True)
class RedisUrl:
    """A parsed Redis URL. ``hosts``: the server, or the Sentinels; ``options``: the
    redis-py ones, passed on as given."""

    url: str
    scheme: str
    hosts: tuple[tuple[str, int], ...]
    service: str | None
    db: int
    username: str | None
    password: str | None
    options: tuple[tuple[str, str], ...]
    wait_replicas: int

    def __repr__(self) -> str:  # never the password, wherever it is printed
        return f"RedisUrl({self.where!r})"

    @property
    def sentinel(self) -> bool:
        return self.scheme in SENTINEL_SCHEMES

    @property
    def cluster(self) -> bool:
        return self.scheme in CLUSTER_SCHEMES

    @property
    def tls(self) -> bool:
        return self.scheme.startswith("rediss")

    @property
    def where(self) -> str:
        return redact(self.url)

    def places(self) -> set[tuple[str, str, int, str, int]]:
        """What names the data: (scheme, host, port, service, db) per host. Two URLs
        sharing one name the same data (a Sentinel names its service's)."""
        kind = "sentinel" if self.sentinel else "cluster" if self.cluster else "server"
        return {(kind, h.lower(), p, self.service or "", self.db) for h, p in self.hosts}


def _bad(url: str, why: str) -> ConfigError:
    shown = repr(redact(url)) if "://" in url else "the URL"  # without it, nothing is known safe
    return ConfigError(f"{why} in {shown}: a Redis URL is {FORMS}")


def _host(url: str, text: str, default_port: int) -> tuple[str, int]:
    if text.startswith("["):  # [IPv6]:PORT
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else rest
    else:
        host, _, port = text.rpartition(":") if ":" in text else (text, "", "")
    if not host or (port and not port.isdigit()) or not 0 < int(port or default_port) < 65536:
        raise _bad(url, f"host {text!r} is not HOST[:PORT]")
    return host, int(port or default_port)


def _number(url: str, what: str, text: str) -> int:
    if not text.isdigit():
        raise _bad(url, f"{what} {text!r} is not a number")
    return int(text)


def parse_redis_url(url: str) -> RedisUrl:
    """The URL's parts; a ConfigError (never showing the password) for a malformed one."""
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep:
        raise _bad(url, "no scheme")
    if scheme not in SCHEMES:
        raise _bad(url, f"scheme {scheme!r} is not one of {', '.join(SCHEMES)}")
    slash = rest.find("/")
    at = rest.rfind("@", 0, len(rest) if slash < 0 else slash)  # as redact() reads it
    userinfo, rest = (rest[:at], rest[at + 1 :]) if at >= 0 else ("", rest)
    user, colon, password = userinfo.partition(":")
    rest, _, query = rest.partition("#")[0].partition("?")
    hostlist, _, path = rest.partition("/")
    if not hostlist:
        raise _bad(url, "no host")
    hosts = tuple(_host(url, h, PORTS[scheme]) for h in hostlist.split(","))
    clustered, watched = scheme in CLUSTER_SCHEMES, scheme in SENTINEL_SCHEMES
    if len(hosts) > 1 and not (watched or clustered):
        raise _bad(url, "several hosts (only redis+sentinel:// and redis+cluster:// list several)")
    segments = path.split("/") if path else []
    service: str | None = None
    if watched:
        if not segments or not segments[0]:
            raise _bad(url, "no service name (the name the Sentinels monitor)")
        service, segments = unquote(segments[0]), segments[1:]
    if len(segments) > 1:
        raise _bad(url, f"path {'/' + path!r} is more than a database number")
    db = _number(url, "database", segments[0]) if segments and segments[0] else 0
    if clustered and db != 0:
        raise _bad(url, f"database {db} (a Redis Cluster has database 0 only)")
    options: list[tuple[str, str]] = []
    wait = 0
    allowed = CLIENT_OPTIONS | (SENTINEL_OPTIONS if watched else frozenset())
    allowed |= {"wait_replicas"}
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name == "wait_replicas":  # ours, not redis-py's
            wait = _number(url, "wait_replicas", value)
        elif name in allowed or (scheme.startswith("rediss") and name.startswith("ssl_")):
            options.append((name, value))
        else:
            raise _bad(url, f"unknown option {name!r} (options: {', '.join(sorted(allowed))})")
    return RedisUrl(
        url=url,
        scheme=scheme,
        hosts=hosts,
        service=service,
        db=db,
        username=unquote(user) if user else None,
        password=unquote(password) if colon else None,
        options=tuple(options),
        wait_replicas=wait,
    )


def connect(target: RedisUrl, timeout_s: float, **kwargs: Any) -> redis.Redis:
    """A client of the URL's server, of its Sentinels' master, or of its cluster (a
    ``RedisCluster``, which takes the same commands; redis-py is imported here: the
    ``redis`` extra). ``timeout_s``: connecting and each reply, unless the URL
    says otherwise; ``kwargs``: more of the client's (``retry``…). The options are read
    by redis-py itself, from a URL of one server rebuilt from the parts."""
    import redis
    from redis import connection, sentinel
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    auth = (target.username, target.password)
    userinfo = ":".join(quote(a or "", safe="") for a in auth) + "@" if any(auth) else ""
    client_options = [(k, v) for k, v in target.options if k not in SENTINEL_OPTIONS]
    query = f"?{urlencode(client_options)}" if client_options else ""
    defaults: dict[str, Any] = {
        "socket_timeout": timeout_s,
        "socket_connect_timeout": timeout_s,
        **kwargs,
    }
    if not (target.sentinel or target.cluster):
        host, port = target.hosts[0]
        host = f"[{host}]" if ":" in host else host
        one = f"{target.scheme}://{userinfo}{host}:{port}/{target.db}{query}"
        return redis.Redis.from_url(one, **defaults)
    parse: Any = connection.parse_url
    base = "rediss" if target.tls else "redis"
    options = {**defaults, **parse(f"{base}://{userinfo}sentinel/{target.db}{query}")}
    options.pop("host", None)  # the Sentinels (the cluster) say where the data is
    options.pop("port", None)
    if options.pop("connection_class", None) is not None:  # rediss+…://
        options["ssl"] = True  # how a cluster or Sentinel client is told (it makes the pools)
    if target.cluster:
        from redis import cluster as rc

        options.pop("db", None)
        node: Any = rc.ClusterNode
        seeds = [node(host, port) for host, port in target.hosts]
        cluster: Any = rc.RedisCluster(startup_nodes=seeds, **options)
        return cast("redis.Redis", cluster)  # the commands fyp sends take the same form
    sentinel_auth = {k[len("sentinel_") :]: v for k, v in target.options if k in SENTINEL_OPTIONS}
    # rediss+sentinel://: the Sentinels are spoken to over TLS too, with the same options
    sentinel_tls = {k: v for k, v in options.items() if k == "ssl" or k.startswith("ssl_")}
    make: Any = sentinel.Sentinel
    watchers = make(
        list(target.hosts),
        sentinel_kwargs={  # one that does not answer: the next is asked, at once
            "socket_timeout": options["socket_timeout"],
            "socket_connect_timeout": options["socket_connect_timeout"],
            "retry": Retry(NoBackoff(), 0),
            **sentinel_auth,
            **sentinel_tls,
        },
        **options,
    )
    client: redis.Redis = watchers.master_for(target.service, redis_class=redis.Redis)
    return client


def disconnect(client: redis.Redis) -> None:
    """Close the client, and the Sentinels' connections of a Sentinel's master client."""
    client.close()
    pool = getattr(client, "connection_pool", None)  # a cluster has one per node
    watchers = getattr(pool, "sentinel_manager", None)
    if watchers is not None:
        watchers.close()
