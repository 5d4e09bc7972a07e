"""The Faust word count this example migrates (docs/faust-migration.md) — for reading side by side
with ``app.py``; kstreamlet does not run it. Run with Faust: ``faust -A faust_app worker``."""

import faust

app = faust.App("faust-wordcount", broker="kafka://localhost:9092", store="rocksdb://")


class WordCount(faust.Record, serializer="json"):
    word: str
    count: int


posts = app.topic("posts", value_type=str, value_serializer="raw")
word_counts_topic = app.topic("word-counts", key_type=str, value_type=WordCount)

# A table: the latest count per word, changelogged to Kafka.
word_counts = app.Table("word_counts", default=int)
# A windowed table: counts per word per hour (tumbling event-time windows of the stream).
hourly = app.Table("hourly_counts", default=int).tumbling(3600.0, expires=7200.0).relative_to_stream()


@app.agent(posts)
async def shuffle_words(lines):
    # Repartition by word: the counting agent's partition owns the word's count.
    async for line in lines:
        for word in line.split():
            await count_words.send(key=word, value=word)


@app.agent(value_type=str)
async def count_words(words):
    async for word in words:
        word_counts[word] += 1
        hourly[word] += 1
        await word_counts_topic.send(key=word, value=WordCount(word=word, count=word_counts[word]))


@app.timer(interval=60.0)
async def report():
    print("distinct words:", len(word_counts))
