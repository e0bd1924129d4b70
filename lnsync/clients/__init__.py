"""gRPC clients of lnsync's own services that more than one process uses: the Ingest producer
(downloaders, ``lnsync import``, tests and benchmarks) and the sync gate (lookup, snapshotter)."""
