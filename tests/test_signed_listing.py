"""A long S3 listing's pages asked for by presigned GETs from the ranges' threads
(``listing._SignedPages``), read as botocore reads them, and botocore asked for whatever those
GETs do not bring: a failed GET, an error answer, a page not read here, a setting presigning
does not carry."""

from __future__ import annotations

import boto3
import pytest

import driftloader.listing as listing
from driftloader.listing_pages import signed_page
from driftloader.sources import expand_urls, filesystem

from .test_sources import _new_bucket

_NAMES = [  # after the numbered names: the listing goes in ranges
    "z a & b.tar",
    "z<x>.tar",
    "\u00e9t\u00e9 %20.tar",
    "plus+sign.tar",
    "tab\tname.tar",
    "sub/x.tar",
    "sub2/y.tar",
]


def _presigned(target: str) -> bool:
    return "X-Amz-Signature=" in target


def _lists(proxy) -> list:
    return [r for r in proxy.requests if r.method == "GET" and "list-type=2" in r.target]


def _bucket_of_names(endpoint: str, fs) -> tuple[str, list[str]]:
    bucket = _new_bucket(endpoint, "signed", False)
    keys = [f"d/k-{i:04d}.tar" for i in range(0, 120)] + [f"d/{n}" for n in _NAMES]
    fs.pipe({f"{bucket}/{key}": key.encode()[: i % 9] for i, key in enumerate(keys)})
    return bucket, keys


def _rows(infos: list[dict]) -> list[tuple]:
    return [
        (i["Key"], i["size"], i["ETag"], i["LastModified"], i.get("StorageClass")) for i in infos
    ]


def test_a_listing_s_pages_are_presigned_gets_giving_what_botocore_gives(
    s3_proxy, s3_env, s3fs_fresh, monkeypatch
):
    """Numbered names in ranges, names that need escaping and URL decoding, subfolders (common
    prefixes): every page a presigned GET, none asked again of botocore, and the objects and
    the folders exactly as s3fs's client lists them."""
    monkeypatch.setattr(listing, "LIST_PAGE_KEYS", 7)
    monkeypatch.setattr(listing, "LIST_BUDGET_S", 60.0)  # a loaded machine: all at once
    bucket, keys = _bucket_of_names(s3_env, s3fs_fresh)
    fs = filesystem(f"s3://{bucket}", {"client_kwargs": {"endpoint_url": s3_proxy.endpoint}})
    s3_proxy.reset_stats()
    signed = listing.objects(fs, bucket, "d/")
    lists = _lists(s3_proxy)
    assert len(lists) >= 18 and all(_presigned(r.target) for r in lists)
    assert all(r.status == 200 for r in lists)
    s3_proxy.reset_stats()
    plain = listing.objects(fs, bucket, "d/", call=fs.call_s3)
    assert not any(_presigned(r.target) for r in _lists(s3_proxy))
    assert _rows(signed) == _rows(plain)
    assert [i["Key"] for i in signed] == sorted(f"{bucket}/{k}" for k in keys if "/" not in k[2:])
    # a page's folders, through both paths
    client = boto3.client("s3", endpoint_url=s3_env)
    want = client.list_objects_v2(Bucket=bucket, Prefix="d/s", Delimiter="/")
    got = listing._SignedPages.of(fs, bucket)
    try:
        page = got("list_objects_v2", Bucket=bucket, Prefix="d/s", Delimiter="/")
    finally:
        got.close()
    assert page["CommonPrefixes"] == want["CommonPrefixes"]
    assert page["IsTruncated"] is False and page["KeyCount"] == want["KeyCount"]


def test_a_page_whose_get_fails_is_asked_of_botocore(s3_proxy, s3_env, s3fs_fresh, monkeypatch):
    """A presigned page cut off mid-body is asked for again through botocore, that page only;
    an error answer (503) hands that page and every page after it to botocore (which retries
    and names errors). Nothing lost or listed twice either way."""
    monkeypatch.setattr(listing, "LIST_PAGE_KEYS", 7)
    monkeypatch.setattr(listing, "LIST_BUDGET_S", 60.0)
    bucket, _ = _bucket_of_names(s3_env, s3fs_fresh)
    fs = filesystem(f"s3://{bucket}", {"client_kwargs": {"endpoint_url": s3_proxy.endpoint}})
    want = _rows(listing.objects(fs, bucket, "d/", call=fs.call_s3))

    s3_proxy.reset_stats()
    s3_proxy.add_fault("reset", method="GET", path="X-Amz-Signature", nth=3, after_bytes=200)
    assert _rows(listing.objects(fs, bucket, "d/")) == want
    lists = _lists(s3_proxy)
    unsigned = [r for r in lists if not _presigned(r.target)]
    assert len(unsigned) == 1 and len(lists) - 1 >= 18  # the cut page, asked again

    s3_proxy.clear_faults()
    s3_proxy.reset_stats()
    s3_proxy.add_fault("status", method="GET", path="X-Amz-Signature", nth=2, status=503)
    assert _rows(listing.objects(fs, bucket, "d/")) == want
    lists = _lists(s3_proxy)
    signed = [r for r in lists if _presigned(r.target)]
    assert [r.status for r in signed].count(503) == 1
    refused = next(r.started for r in signed if r.status == 503)
    late = [r for r in signed if r.started > refused + 0.5]  # once the refusal was read
    assert not late and len(lists) - len(signed) >= 12  # the rest asked by botocore


def test_settings_presigning_does_not_carry_leave_the_pages_to_botocore(
    s3_proxy, s3_env, s3fs_fresh
):
    """Requester-pays (a header a presigned URL does not carry here) and a proxy spoken to
    over https: s3fs's client asks for every page, as before."""
    bucket, _ = _bucket_of_names(s3_env, s3fs_fresh)
    endpoint = {"endpoint_url": s3_proxy.endpoint}
    for options in (
        {"client_kwargs": endpoint, "requester_pays": True},
        {"client_kwargs": endpoint, "config_kwargs": {"proxies": {"http": "https://127.0.0.1:9"}}},
    ):
        fs = filesystem(f"s3://{bucket}", options)
        assert listing._SignedPages.of(fs, bucket) is None
    s3_proxy.reset_stats()
    paying = {"client_kwargs": endpoint, "requester_pays": True}
    assert len(expand_urls(f"s3://{bucket}/d/k-*.tar", paying)) == 120
    lists = _lists(s3_proxy)
    assert lists and not any(_presigned(r.target) for r in lists)


_PAGE = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
    "<Name>b</Name><Prefix>d%2F</Prefix><KeyCount>2</KeyCount><MaxKeys>1000</MaxKeys>"
    "<Delimiter>%2F</Delimiter><EncodingType>url</EncodingType><IsTruncated>true</IsTruncated>"
    "<Contents><Key>d/a+b%25.tar</Key><LastModified>2026-01-01T00:00:00.000Z</LastModified>"
    "<ETag>&quot;e1&quot;</ETag><Size>3</Size><StorageClass>STANDARD</StorageClass></Contents>"
    "<CommonPrefixes><Prefix>d/sub%2B/</Prefix></CommonPrefixes>"
    "<NextContinuationToken>tok</NextContinuationToken></ListBucketResult>"
)


def test_a_signed_page_is_read_or_left_to_botocore():
    page = signed_page(_PAGE.encode())
    assert page is not None
    assert [(o["Key"], o["ETag"], o["Size"]) for o in page["Contents"]] == [
        ("d/a b%.tar", '"e1"', 3)
    ]
    assert page["CommonPrefixes"] == [{"Prefix": "d/sub+/"}]
    assert (page["Prefix"], page["Delimiter"], page["KeyCount"]) == ("d/", "/", 2)
    assert page["IsTruncated"] is True and page["NextContinuationToken"] == "tok"
    error = b"<?xml version='1.0'?><Error><Code>SlowDown</Code><Message>m</Message></Error>"
    assert signed_page(error) is None
    assert signed_page(_PAGE.encode()[:-40]) is None  # cut short
    other = _PAGE.replace("<Name>b</Name>", "<Owner><ID>x</ID></Owner>")
    assert signed_page(other.encode()) is None  # a field of fields: botocore's to read


@pytest.mark.parametrize("encoded", [True, False])
def test_a_signed_page_decodes_only_what_the_page_says_is_encoded(encoded):
    text = _PAGE if encoded else _PAGE.replace("<EncodingType>url</EncodingType>", "")
    page = signed_page(text.encode())
    assert page["Contents"][0]["Key"] == ("d/a b%.tar" if encoded else "d/a+b%25.tar")
