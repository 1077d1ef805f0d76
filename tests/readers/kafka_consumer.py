"""An independent reader of floe's Kafka topic (confluent-kafka from PyPI).

Reads every partition of the topic from the beginning until it has seen
`--expect` records (or `--timeout` seconds pass), checks that each record is a
floe event as floe documents it (JSON value, headers agreeing with the value,
key = partition key), and prints one JSON line:

    {"count": N, "distinct_keys": D, "crc32": C, "version_sum": V}

where `crc32` is the CRC-32 (zlib) of the sorted idempotency keys joined by
newlines, so the caller can compare it with what floe acknowledged.
"""

import argparse
import json
import sys
import time
import uuid
import zlib

from confluent_kafka import Consumer, KafkaError, TopicPartition


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--expect", type=int, required=True)
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args()

    consumer = Consumer(
        {
            "bootstrap.servers": args.bootstrap,
            "group.id": f"floe-python-reader-{uuid.uuid4()}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    metadata = consumer.list_topics(args.topic, timeout=30)
    partitions = sorted(metadata.topics[args.topic].partitions)
    consumer.assign([TopicPartition(args.topic, p, 0) for p in partitions])

    keys = []
    version_sum = 0
    deadline = time.monotonic() + args.timeout
    while len(keys) < args.expect and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is None:
            continue
        if message.error():
            if message.error().code() == KafkaError._PARTITION_EOF:
                continue
            print(f"consumer error: {message.error()}", file=sys.stderr)
            return 2
        event = json.loads(message.value())
        headers = {k: v.decode() for k, v in (message.headers() or [])}
        problems = []
        if headers.get("floe.idempotency_key") != event["idempotency_key"]:
            problems.append("idempotency key header")
        if headers.get("floe.kind") != event["kind"]:
            problems.append("kind header")
        if headers.get("floe.version") != str(event["version"]):
            problems.append("version header")
        if message.key().decode() != event["partition_key"]:
            problems.append("record key")
        if (event["state"] is None) != (event["kind"] == "deleted"):
            problems.append("state")
        if problems:
            print(
                f"record {message.partition()}/{message.offset()} disagrees: {problems}",
                file=sys.stderr,
            )
            return 3
        keys.append(event["idempotency_key"])
        version_sum += event["version"]
    # Anything beyond the expected count is reported too: read a little more.
    extra_deadline = time.monotonic() + 2.0
    while time.monotonic() < extra_deadline:
        message = consumer.poll(0.2)
        if message is not None and not message.error():
            event = json.loads(message.value())
            keys.append(event["idempotency_key"])
            version_sum += event["version"]
    consumer.close()

    checksum = zlib.crc32("\n".join(sorted(keys)).encode())
    print(
        json.dumps(
            {
                "count": len(keys),
                "distinct_keys": len(set(keys)),
                "crc32": checksum,
                "version_sum": version_sum,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
