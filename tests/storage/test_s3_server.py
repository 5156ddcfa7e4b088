import polars as pl
from deltalake import DeltaTable, write_deltalake

def test_moto_delta_roundtrip(s3_bucket):
    uri = s3_bucket.uri("t")
    df = pl.DataFrame({"a": [1, 2, 3]})
    write_deltalake(uri, df.to_arrow(), storage_options=s3_bucket.storage_options)
    write_deltalake(uri, df.to_arrow(), mode="append", storage_options=s3_bucket.storage_options)
    t = DeltaTable(uri, storage_options=s3_bucket.storage_options)
    assert t.version() == 1
    assert pl.scan_delta(t).collect().height == 6
    assert any(k.startswith("t/_delta_log/") for k in s3_bucket.keys("t/"))
