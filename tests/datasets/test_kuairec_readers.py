"""KuaiRec side-table readers, on the bundled real sample and on crafted edge cases."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from fyp.catalog.models import User, Video
from fyp.datasets.demo import sample_dir
from fyp.datasets.kuairec import (
    PLACEHOLDER_DURATION_MS,
    build_user,
    build_video,
    parse_feat,
    parse_topic_tag,
    read_captions,
    read_item_categories,
    read_table,
    read_users,
    read_videos,
)
from fyp.errors import InvalidRequest, ValidationFailed

SAMPLE = sample_dir()


def _data_lines(name: str) -> int:
    """Records in a side table: lines end in LF only (a bare CR is caption text)."""
    return (SAMPLE / name).read_bytes().count(b"\n") - 1


def test_sample_row_counts() -> None:
    users = read_users(SAMPLE / "user_features.csv")
    videos = read_videos(SAMPLE / "item_categories.csv", SAMPLE / "kuairec_caption_category.csv")
    assert len(users) == _data_lines("user_features.csv") == 1000
    assert len(videos) == _data_lines("kuairec_caption_category.csv") == 1348
    assert len(read_item_categories(SAMPLE / "item_categories.csv")) == 1348


def test_user_attributes_are_typed() -> None:
    attrs = read_users(SAMPLE / "user_features.csv")["3"]
    assert attrs["user_active_degree"] == "full_active"
    assert attrs["follow_user_num"] == 16
    assert attrs["follow_user_num_range"] == "(10,50]"
    assert attrs["fans_user_num_range"] == "0"  # a bucket label, not a count
    assert attrs["register_days"] == 105
    assert attrs["onehot_feat3"] == 281
    assert "user_id" not in attrs


def test_built_users_and_videos_pass_full_validation() -> None:
    """The builders skip pydantic for speed, so they must produce what it would accept."""
    users = read_users(SAMPLE / "user_features.csv")
    for user_id, attrs in users.items():
        user = build_user(user_id, "us", attrs, 1)
        again = User.model_validate(user.model_dump())
        assert again == user
        assert (user.birth_year, user.country, user.language) == (None, None, None)
    videos = read_videos(SAMPLE / "item_categories.csv", SAMPLE / "kuairec_caption_category.csv")
    for info in videos.values():
        video = build_video(info, ["us", "eu"], 1)
        assert Video.model_validate(video.model_dump()) == video
        assert video.duration_ms == PLACEHOLDER_DURATION_MS
        assert video.attributes["duration_known"] is False
        assert video.creator_id is None


def test_chinese_caption_hashtags_categories_of_a_real_row() -> None:
    v = read_videos(SAMPLE / "item_categories.csv", SAMPLE / "kuairec_caption_category.csv")["158"]
    assert v.caption == (
        "#感谢快手我要上热门 #变瘦变美变好看 #爱生活爱官方爱热门 #客厅健身房 #今日份的自拍 "
    )
    assert v.hashtags == [
        "今日份的自拍",
        "变瘦变美变好看",
        "客厅健身房",
        "感谢快手我要上热门",
        "爱生活爱官方爱热门",
    ]
    assert v.categories == ["健身", "燃脂训练", "健身操"]
    assert v.tags == ["7"]
    assert v.attributes == {
        "first_level_category_id": 31,
        "second_level_category_id": 692,
        "third_level_category_id": 1054,
    }


def test_unknown_levels_and_cover_text_are_skipped() -> None:
    videos = read_captions(SAMPLE / "kuairec_caption_category.csv")
    assert videos["6331"].categories == []
    assert videos["6331"].attributes == {}
    assert videos["21"].categories == ["音乐", "音乐演唱"]
    assert videos["21"].attributes["manual_cover_text"] == "邓紫棋酒店隔离洗手间大放歌喉"
    assert "manual_cover_text" not in videos["158"].attributes


def test_rows_with_a_bare_carriage_return_parse_intact() -> None:
    videos = read_captions(SAMPLE / "kuairec_caption_category.csv")
    assert videos["1378"].caption == "张凯教练：“我希望我们能开启一段王朝\r！”"
    assert videos["1378"].categories == ["明星娱乐"]
    assert videos["5910"].caption.endswith("说不会就是不会\r")
    assert videos["5910"].categories == ["其他", "生活泛拍"]
    assert videos["1613"].hashtags == ["井柏然", "宋威龙", "张公案"]
    assert sum("\r" in v.caption for v in videos.values()) == 4
    # The csv module alone would split these records (the gotcha the reader avoids).
    with (SAMPLE / "kuairec_caption_category.csv").open(encoding="utf-8", newline="") as f:
        assert sum(1 for _ in csv.reader(f)) - 1 > len(videos)


def test_parse_topic_tag_and_feat() -> None:
    assert parse_topic_tag("[五爱市场,感谢快手我要上热门,搞笑]") == [
        "五爱市场",
        "感谢快手我要上热门",
        "搞笑",
    ]
    assert parse_topic_tag("[]") == []
    assert parse_topic_tag("") == []
    assert parse_topic_tag("[#搞笑, ＃搞笑 ,搞笑]") == ["搞笑"]
    assert parse_feat("[27, 9]", Path("f"), "1") == ["27", "9"]
    assert parse_feat("[8]", Path("f"), "1") == ["8"]
    with pytest.raises(ValidationFailed, match="non-integer"):
        parse_feat("[a]", Path("f"), "1")
    with pytest.raises(ValidationFailed, match="not a list"):
        parse_feat("8", Path("f"), "1")


def test_missing_file_and_wrong_columns_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match=r"nope\.csv: file not found"):
        read_users(tmp_path / "nope.csv")
    bad = tmp_path / "user_features.csv"
    bad.write_text("id,degree\n1,x\n", encoding="utf-8")
    with pytest.raises(ValidationFailed, match="expected columns user_id") as exc:
        read_users(bad)
    assert "user_features.csv" in exc.value.message
    ragged = tmp_path / "item_categories.csv"
    ragged.write_text("video_id,feat\n1,[2]\n2\n", encoding="utf-8")
    with pytest.raises(ValidationFailed, match="record 2 has 1 fields"):
        read_item_categories(ragged)


def test_crlf_files_and_quoted_fields(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_bytes(b'a,b\r\n1,"x,y"\r\n2,"multi\nline"\r\n')
    header, rows = read_table(path, ("a", "b"))
    assert header == ["a", "b"]
    assert rows == [["1", "x,y"], ["2", "multi\nline"]]
    path.write_bytes(b"a,b\n1,bare\rcr\n")
    assert read_table(path, ("a",))[1] == [["1", "bare\rcr"]]
