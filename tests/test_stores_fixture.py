"""The store-server fixtures themselves (tests/stores.py): real servers, outages, refusals."""

from __future__ import annotations

import pytest

from tests.stores import StoreArea, StoreServer


def test_put_list_read_back(store: StoreArea) -> None:
    store.fs.pipe_file(f"{store.path}/a/b.bin", b"x" * 1000)
    assert store.find() == {"a/b.bin": 1000}
    assert store.read("a/b.bin") == b"x" * 1000


def test_stop_refuses_and_start_keeps_the_objects(store: StoreArea) -> None:
    store.fs.pipe_file(f"{store.path}/kept.bin", b"kept")
    store.server.stop()
    assert not store.server.running
    with pytest.raises(Exception):  # each client raises its own connect error
        store.server.filesystem().cat_file(f"{store.path}/kept.bin")
    store.server.start()
    assert store.read("kept.bin") == b"kept"


def test_wrong_webdav_password_is_refused(webdav_server: StoreServer) -> None:
    from webdav4.fsspec import WebdavFileSystem

    fs = WebdavFileSystem(f"{webdav_server.endpoint}/", auth=("recorder", "wrong"))
    with pytest.raises(Exception, match="401"):
        fs.pipe_file("dav/x", b"x")


def test_readonly_share_refuses_writes(webdav_server: StoreServer) -> None:
    assert webdav_server.readonly_url is not None
    fs = webdav_server.filesystem()
    with pytest.raises(Exception, match="403"):
        fs.pipe_file(webdav_server.fs_path(webdav_server.readonly_url) + "/x", b"x")
