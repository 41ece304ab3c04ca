"""Shards are dynamic partitions: their number follows the data, not the code.

The ingest asset adds a partition for every shard it writes, and a sensor adds
any shard table that appears on disk by other means, so a growing dataset gets
new partitions without a code change while existing shards keep their samples.
"""

import dagster as dg

shards = dg.DynamicPartitionsDefinition(name="shards")
