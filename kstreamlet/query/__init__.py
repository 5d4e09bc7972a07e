"""Interactive queries: read a store's committed state from any instance (docs/operations.md,
"Interactive queries"). :class:`QueryService` serves ``/stores...`` and ``/metadata...`` on the
app's HTTP port and backs ``app.query(store)`` (:class:`StoreQuery`)."""

from kstreamlet.query.metadata import InstanceInfo, MetadataBoard, metadata_topic
from kstreamlet.partitioner import murmur2, partition_of
from kstreamlet.query.service import (
    FORWARDED,
    RETRY_AFTER,
    BadQuery,
    NotFound,
    QueryError,
    QueryService,
    QueryUnavailable,
    StoreQuery,
    advertised_url,
    store_query,
)

__all__ = ["InstanceInfo", "MetadataBoard", "metadata_topic", "murmur2", "partition_of", "FORWARDED",
           "RETRY_AFTER", "BadQuery", "NotFound", "QueryError", "QueryService", "QueryUnavailable", "StoreQuery",
           "advertised_url", "store_query"]
