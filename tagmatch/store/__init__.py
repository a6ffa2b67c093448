"""The reference library as vectors: the sharded embedding store (`shards`), embedding a folder
into it incrementally (`index`), the approximate search index beside it (`ann`), and the
process/Dask backends that embed in parallel (`parallel`)."""
