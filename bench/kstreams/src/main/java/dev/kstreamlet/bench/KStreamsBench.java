package dev.kstreamlet.bench;

import java.io.IOException;
import java.lang.management.ManagementFactory;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;

import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.utils.AppInfoParser;
import org.apache.kafka.common.utils.Bytes;
import org.apache.kafka.streams.CloseOptions;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.KeyValue;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.Topology;
import org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Grouped;
import org.apache.kafka.streams.kstream.JoinWindows;
import org.apache.kafka.streams.kstream.KStream;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.kstream.Repartitioned;
import org.apache.kafka.streams.kstream.StreamJoined;
import org.apache.kafka.streams.kstream.Suppressed;
import org.apache.kafka.streams.kstream.TimeWindows;
import org.apache.kafka.streams.processor.StateRestoreListener;
import org.apache.kafka.streams.state.KeyValueStore;
import org.apache.kafka.streams.state.WindowStore;

/**
 * Kafka Streams baseline worker of the kstreamlet benchmarks: the contract is bench/SCENARIOS.md.
 *
 * <pre>
 * java -jar kstreams-bench.jar &lt;scenario&gt; --bootstrap B --application-id G
 *      --in-topic T [--in-topic2 T2] --out-topic O --state-dir D
 *      --guarantee exactly_once|at_least_once --commit-interval-ms MS --threads 1
 *      --target N --timeout-s S [--mode run|restore] [--warmup-records N] [--cache-max-bytes B]
 * java -jar kstreams-bench.jar --version
 * </pre>
 *
 * Prints exactly one line {@code BENCH_RESULT {json}} on stdout (logs go to stderr) and exits 0.
 * Timing as bench.common.Probe: the clock starts when the first input record reaches a counting
 * {@code peek} placed right after every source (including the repartition topic's source) and
 * stops when that count reaches the target; the worker then waits for the next commit (the one
 * that makes the last output visible) and closes the client.
 */
public final class KStreamsBench {
    static final String RESULT_PREFIX = "BENCH_RESULT ";
    static final String FLUSH_KEY = "__flush__";

    // --- command line ---------------------------------------------------------------------------

    static final class Args {
        String scenario;
        String bootstrap;
        String applicationId;
        String inTopic;
        String inTopic2;
        String outTopic;
        String stateDir;
        String guarantee = "exactly_once";
        long commitIntervalMs = 1000;
        int threads = 1;
        long target;
        double timeoutS = 600;
        String mode = "run";
        long warmupRecords = 0;
        long cacheMaxBytes = -1; // -1: Kafka Streams' default record cache

        static Args parse(String[] argv) {
            Args a = new Args();
            List<String> pos = new ArrayList<>();
            for (int i = 0; i < argv.length; i++) {
                String k = argv[i];
                if (!k.startsWith("--")) {
                    pos.add(k);
                    continue;
                }
                String v;
                int eq = k.indexOf('=');
                if (eq > 0) {
                    v = k.substring(eq + 1);
                    k = k.substring(0, eq);
                } else {
                    if (i + 1 >= argv.length) throw new IllegalArgumentException("missing value for " + k);
                    v = argv[++i];
                }
                switch (k) {
                    case "--bootstrap": a.bootstrap = v; break;
                    case "--application-id": a.applicationId = v; break;
                    case "--in-topic": a.inTopic = v; break;
                    case "--in-topic2": a.inTopic2 = v; break;
                    case "--out-topic": a.outTopic = v; break;
                    case "--state-dir": a.stateDir = v; break;
                    case "--guarantee": a.guarantee = v; break;
                    case "--commit-interval-ms": a.commitIntervalMs = Long.parseLong(v); break;
                    case "--threads": a.threads = Integer.parseInt(v); break;
                    case "--target": a.target = Long.parseLong(v); break;
                    case "--timeout-s": a.timeoutS = Double.parseDouble(v); break;
                    case "--mode": a.mode = v; break;
                    case "--warmup-records": a.warmupRecords = Long.parseLong(v); break;
                    case "--cache-max-bytes": a.cacheMaxBytes = Long.parseLong(v); break;
                    default: throw new IllegalArgumentException("unknown option " + k);
                }
            }
            if (pos.size() != 1) throw new IllegalArgumentException("expected one scenario, got " + pos);
            a.scenario = pos.get(0);
            require(a.bootstrap, "--bootstrap");
            require(a.applicationId, "--application-id");
            require(a.inTopic, "--in-topic");
            require(a.outTopic, "--out-topic");
            require(a.stateDir, "--state-dir");
            if (!a.guarantee.equals("exactly_once") && !a.guarantee.equals("at_least_once"))
                throw new IllegalArgumentException("--guarantee must be exactly_once or at_least_once");
            if (!a.mode.equals("run") && !a.mode.equals("restore"))
                throw new IllegalArgumentException("--mode must be run or restore");
            if (a.mode.equals("restore") && !a.scenario.equals("wordcount"))
                throw new IllegalArgumentException("--mode restore is only for wordcount");
            if (a.scenario.equals("join")) require(a.inTopic2, "--in-topic2");
            if (a.warmupRecords < 0 || (a.target > 0 && a.warmupRecords >= a.target))
                throw new IllegalArgumentException("--warmup-records must be >= 0 and below --target");
            return a;
        }

        static void require(String v, String name) {
            if (v == null) throw new IllegalArgumentException(name + " is required");
        }
    }

    // --- measurement ----------------------------------------------------------------------------

    static long cpuNanos() {
        java.lang.management.OperatingSystemMXBean os = ManagementFactory.getOperatingSystemMXBean();
        if (os instanceof com.sun.management.OperatingSystemMXBean) {
            return ((com.sun.management.OperatingSystemMXBean) os).getProcessCpuTime();
        }
        return -1;
    }

    /** (total, idle + iowait) jiffies of all CPUs from /proc/stat, or null. */
    static long[] machineTicks() {
        try {
            String line = Files.readAllLines(Path.of("/proc/stat")).get(0);
            String[] f = line.trim().split("\\s+");
            long total = 0;
            for (int i = 1; i < f.length; i++) total += Long.parseLong(f[i]);
            long idle = Long.parseLong(f[4]) + (f.length > 5 ? Long.parseLong(f[5]) : 0);
            return new long[] {total, idle};
        } catch (IOException | RuntimeException e) {
            return null;
        }
    }

    /** Counts records reaching the processing code; the same timing model as bench.common.Probe. */
    static final class Probe {
        final long target;
        /** The clock starts at record warmup + 1: the first warmup records (JIT warm-up) are not timed. */
        long warmup;
        final java.util.concurrent.atomic.AtomicLong n = new java.util.concurrent.atomic.AtomicLong();
        final AtomicBoolean started = new AtomicBoolean();
        final CountDownLatch reached = new CountDownLatch(1);
        volatile long tFirst, tLast, tCommitted;
        volatile long cpuFirst, cpuLast;
        volatile long[] boxFirst, boxLast;
        volatile long processed;
        volatile double commitsAtLast = Double.NaN;
        volatile KafkaStreams streams;

        Probe(long target) {
            this.target = target;
        }

        /** Called for every input record (each source and the repartition source). */
        void record() {
            long c = n.incrementAndGet();
            if (c == warmup + 1 && started.compareAndSet(false, true)) {
                tFirst = System.nanoTime();
                cpuFirst = cpuNanos();
                boxFirst = machineTicks();
            }
            if (c == target && target > 0) {
                last(c);
                reached.countDown();
            }
        }

        void last(long c) {
            tLast = System.nanoTime();
            cpuLast = cpuNanos();
            boxLast = machineTicks();
            processed = c;
            KafkaStreams s = streams;
            if (s != null) commitsAtLast = commitTotal(s);
        }

        boolean hasFirst() {
            return started.get() && tFirst != 0;
        }

        Map<String, Object> result() {
            Map<String, Object> r = new LinkedHashMap<>();
            if (!hasFirst() || tLast == 0) {
                r.put("ok", false);
                r.put("error", "target not reached");
                r.put("processed", n.get());
                return r;
            }
            double secs = Math.max((tLast - tFirst) / 1e9, 1e-9);
            double cpu = (cpuLast - cpuFirst) / 1e9;
            Double busy = null;
            if (boxFirst != null && boxLast != null && boxLast[0] > boxFirst[0]) {
                long total = boxLast[0] - boxFirst[0];
                long idle = boxLast[1] - boxFirst[1];
                busy = 100.0 * (total - idle) / total;
            }
            long measured = processed - warmup;
            r.put("ok", true);
            r.put("processed", measured);
            r.put("warmup_records", warmup);
            r.put("seconds", secs);
            r.put("rate", measured / secs);
            r.put("cpu_seconds", cpu);
            r.put("cpu_us_per_record", cpu / Math.max(measured, 1) * 1e6);
            r.put("machine_busy_pct", busy);
            r.put("seconds_to_final_commit", tCommitted != 0 ? (tCommitted - tFirst) / 1e9 : null);
            // System.nanoTime is CLOCK_MONOTONIC on Linux: the same clock as Python's time.monotonic
            r.put("t_first_mono", tFirst / 1e9);
            r.put("t_last_mono", tLast / 1e9);
            return r;
        }
    }

    /** Sum of the stream threads' {@code commit-total} metrics (commit rounds that committed something). */
    static double commitTotal(KafkaStreams streams) {
        double sum = 0;
        try {
            for (var e : streams.metrics().entrySet()) {
                if (e.getKey().name().equals("commit-total") && e.getKey().group().equals("stream-thread-metrics")) {
                    Object v = e.getValue().metricValue();
                    if (v instanceof Number) sum += ((Number) v).doubleValue();
                }
            }
        } catch (RuntimeException e) {
            return Double.NaN;
        }
        return sum;
    }

    // --- topologies -----------------------------------------------------------------------------

    static byte[] upper(byte[] v) {
        if (v == null) return null;
        byte[] out = new byte[v.length];
        for (int i = 0; i < v.length; i++) {
            byte b = v[i];
            out[i] = (b >= 'a' && b <= 'z') ? (byte) (b - 32) : b;
        }
        return out;
    }

    static Topology topology(Args a, Probe probe) {
        StreamsBuilder b = new StreamsBuilder();
        switch (a.scenario) {
            case "stateless":
            case "latency": {
                b.stream(a.inTopic, Consumed.with(Serdes.ByteArray(), Serdes.ByteArray()))
                        .peek((k, v) -> probe.record())
                        .mapValues(KStreamsBench::upper)
                        .to(a.outTopic, Produced.with(Serdes.ByteArray(), Serdes.ByteArray()));
                break;
            }
            case "wordcount": {
                // split -> key by word -> repartition topic "<app>-words-repartition" -> count in the
                // persistent (RocksDB) store "counts" with its changelog -> (word, count as int64 BE).
                // groupBy(word).count() would insert the same repartition topic implicitly; it is made
                // explicit only to put the counting peek right after its source.
                b.stream(a.inTopic, Consumed.with(Serdes.ByteArray(), Serdes.String()))
                        .peek((k, v) -> probe.record())
                        .flatMap((k, line) -> {
                            List<KeyValue<String, String>> words = new ArrayList<>();
                            for (String w : line.split(" ")) {
                                if (!w.isEmpty()) words.add(KeyValue.pair(w, w));
                            }
                            return words;
                        })
                        .repartition(Repartitioned.<String, String>as("words")
                                .withKeySerde(Serdes.String()).withValueSerde(Serdes.String()))
                        .peek((k, v) -> probe.record())
                        .groupByKey(Grouped.with(Serdes.String(), Serdes.String()))
                        .count(Materialized.<String, Long, KeyValueStore<Bytes, byte[]>>as("counts")
                                .withKeySerde(Serdes.String()).withValueSerde(Serdes.Long()))
                        .toStream()
                        .to(a.outTopic, Produced.with(Serdes.String(), Serdes.Long()));
                break;
            }
            case "window": {
                // Tumbling 10 s event-time windows, grace 1 s, (count, sum) per (sensor, window), final
                // results only; output "<sensor>@<window_start_ms>" -> count, sum as int64 BE.
                b.stream(a.inTopic, Consumed.with(Serdes.String(), Serdes.Long()))
                        .peek((k, v) -> probe.record())
                        .groupByKey(Grouped.with(Serdes.String(), Serdes.Long()))
                        .windowedBy(TimeWindows.ofSizeAndGrace(Duration.ofSeconds(10), Duration.ofSeconds(1)))
                        .aggregate(
                                () -> new byte[16],
                                (key, value, agg) -> {
                                    ByteBuffer in = ByteBuffer.wrap(agg);
                                    long count = in.getLong(0), sum = in.getLong(8);
                                    return ByteBuffer.allocate(16).putLong(count + 1).putLong(sum + (value == null ? 0 : value)).array();
                                },
                                Materialized.<String, byte[], WindowStore<Bytes, byte[]>>as("window-agg")
                                        .withKeySerde(Serdes.String()).withValueSerde(Serdes.ByteArray()))
                        .suppress(Suppressed.untilWindowCloses(Suppressed.BufferConfig.unbounded()).withName("window-final"))
                        .toStream()
                        .filter((wk, v) -> !FLUSH_KEY.equals(wk.key()))
                        .map((wk, v) -> KeyValue.pair(wk.key() + "@" + wk.window().start(), v))
                        .to(a.outTopic, Produced.with(Serdes.String(), Serdes.ByteArray()));
                break;
            }
            case "join": {
                // Interval join: right.ts in [left.ts - 2000, left.ts + 3000] (inclusive), grace 1 s.
                KStream<String, byte[]> left = b.stream(a.inTopic, Consumed.with(Serdes.String(), Serdes.ByteArray()))
                        .peek((k, v) -> probe.record());
                KStream<String, byte[]> right = b.stream(a.inTopic2, Consumed.with(Serdes.String(), Serdes.ByteArray()))
                        .peek((k, v) -> probe.record());
                JoinWindows windows = JoinWindows.ofTimeDifferenceAndGrace(Duration.ofMillis(3000), Duration.ofSeconds(1))
                        .before(Duration.ofMillis(2000))
                        .after(Duration.ofMillis(3000));
                left.join(right,
                                (l, r) -> {
                                    byte[] out = new byte[l.length + 1 + r.length];
                                    System.arraycopy(l, 0, out, 0, l.length);
                                    out[l.length] = '|';
                                    System.arraycopy(r, 0, out, l.length + 1, r.length);
                                    return out;
                                },
                                windows,
                                StreamJoined.with(Serdes.String(), Serdes.ByteArray(), Serdes.ByteArray())
                                        .withName("orders-shipments").withStoreName("orders-shipments"))
                        .filter((k, v) -> !FLUSH_KEY.equals(k))
                        .to(a.outTopic, Produced.with(Serdes.String(), Serdes.ByteArray()));
                break;
            }
            default:
                throw new IllegalArgumentException("unknown scenario " + a.scenario
                        + " (stateless, wordcount, window, join, latency)");
        }
        return b.build();
    }

    static Properties config(Args a) {
        Properties p = new Properties();
        p.put(StreamsConfig.APPLICATION_ID_CONFIG, a.applicationId);
        p.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, a.bootstrap);
        p.put(StreamsConfig.STATE_DIR_CONFIG, a.stateDir);
        p.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG,
                a.guarantee.equals("exactly_once") ? StreamsConfig.EXACTLY_ONCE_V2 : StreamsConfig.AT_LEAST_ONCE);
        p.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, a.commitIntervalMs);
        p.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, a.threads);
        p.put(StreamsConfig.REPLICATION_FACTOR_CONFIG, 1);
        p.put(StreamsConfig.DEFAULT_KEY_SERDE_CLASS_CONFIG, Serdes.ByteArraySerde.class);
        p.put(StreamsConfig.DEFAULT_VALUE_SERDE_CLASS_CONFIG, Serdes.ByteArraySerde.class);
        p.put(StreamsConfig.consumerPrefix(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG), "earliest");
        if (a.cacheMaxBytes >= 0) p.put(StreamsConfig.STATESTORE_CACHE_MAX_BYTES_CONFIG, a.cacheMaxBytes); // 0: cache off
        // Everything else (record cache, consumer/producer tuning, group protocol) at the defaults.
        return p;
    }

    // --- output ---------------------------------------------------------------------------------

    static final AtomicBoolean printed = new AtomicBoolean();

    static synchronized void emit(Map<String, Object> r) {
        if (!printed.compareAndSet(false, true)) return;
        System.out.println(RESULT_PREFIX + json(r));
        System.out.flush();
    }

    static String json(Object o) {
        if (o == null) return "null";
        if (o instanceof Boolean) return o.toString();
        if (o instanceof Double || o instanceof Float) {
            double d = ((Number) o).doubleValue();
            return Double.isFinite(d) ? Double.toString(d) : "null";
        }
        if (o instanceof Number) return o.toString();
        if (o instanceof Map) {
            StringBuilder sb = new StringBuilder("{");
            boolean first = true;
            for (Map.Entry<?, ?> e : ((Map<?, ?>) o).entrySet()) {
                if (!first) sb.append(", ");
                first = false;
                sb.append(json(String.valueOf(e.getKey()))).append(": ").append(json(e.getValue()));
            }
            return sb.append('}').toString();
        }
        if (o instanceof List) {
            StringBuilder sb = new StringBuilder("[");
            boolean first = true;
            for (Object x : (List<?>) o) {
                if (!first) sb.append(", ");
                first = false;
                sb.append(json(x));
            }
            return sb.append(']').toString();
        }
        String s = o.toString();
        StringBuilder sb = new StringBuilder("\"");
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            switch (c) {
                case '"': sb.append("\\\""); break;
                case '\\': sb.append("\\\\"); break;
                case '\n': sb.append("\\n"); break;
                case '\r': sb.append("\\r"); break;
                case '\t': sb.append("\\t"); break;
                default:
                    if (c < 0x20) sb.append(String.format("\\u%04x", (int) c));
                    else sb.append(c);
            }
        }
        return sb.append('"').toString();
    }

    static Map<String, Object> facts(Args a) {
        Map<String, Object> f = new LinkedHashMap<>();
        f.put("system", "kafka-streams");
        f.put("scenario", a.scenario);
        f.put("mode", a.mode);
        f.put("guarantee", a.guarantee);
        f.put("commit_interval_ms", a.commitIntervalMs);
        f.put("threads", a.threads);
        f.put("statestore_cache_max_bytes", a.cacheMaxBytes >= 0 ? (Object) a.cacheMaxBytes : "default");
        f.put("kafka_streams", AppInfoParser.getVersion());
        f.put("java", System.getProperty("java.version"));
        return f;
    }

    // --- main -----------------------------------------------------------------------------------

    public static void main(String[] argv) throws Exception {
        // slf4j-simple: WARN and up, to stderr (unless overridden with -D...).
        if (System.getProperty("org.slf4j.simpleLogger.defaultLogLevel") == null)
            System.setProperty("org.slf4j.simpleLogger.defaultLogLevel", "warn");
        System.setProperty("org.slf4j.simpleLogger.logFile", "System.err");
        System.setProperty("org.slf4j.simpleLogger.showDateTime", "true");

        if (argv.length == 1 && argv[0].equals("--version")) {
            Map<String, Object> v = new LinkedHashMap<>();
            v.put("kafka_streams", AppInfoParser.getVersion());
            v.put("java", System.getProperty("java.version"));
            v.put("java_vm", System.getProperty("java.vm.name") + " " + System.getProperty("java.vm.version"));
            System.out.println(json(v));
            return;
        }
        Args a;
        try {
            a = Args.parse(argv);
        } catch (IllegalArgumentException e) {
            System.err.println("kstreams-bench: " + e.getMessage());
            System.err.println("usage: java -jar kstreams-bench.jar <stateless|wordcount|window|join|latency> --bootstrap B "
                    + "--application-id G --in-topic T [--in-topic2 T2] --out-topic O --state-dir D "
                    + "--guarantee exactly_once|at_least_once --commit-interval-ms MS --threads 1 --target N "
                    + "--timeout-s S [--mode run|restore] [--warmup-records N] [--cache-max-bytes B]");
            System.exit(2);
            return;
        }
        int rc = a.mode.equals("restore") ? restore(a) : run(a);
        System.exit(rc);
    }

    static Map<String, Object> merged(Map<String, Object> r, Map<String, Object> extra) {
        Map<String, Object> m = new LinkedHashMap<>(r);
        for (Map.Entry<String, Object> e : extra.entrySet()) m.putIfAbsent(e.getKey(), e.getValue());
        return m;
    }

    /** Set by SIGTERM / SIGINT (how latency runs are ended): the main thread stops, closes and reports. */
    static volatile boolean signalled;

    static void onStopSignals(CountDownLatch wake) {
        for (String name : new String[] {"TERM", "INT"}) {
            try {
                sun.misc.Signal.handle(new sun.misc.Signal(name), sig -> {
                    signalled = true;
                    wake.countDown();
                });
            } catch (IllegalArgumentException e) {
                // signal not available here: the JVM's default handling stays
            }
        }
    }

    static int run(Args a) throws InterruptedException {
        boolean latency = a.scenario.equals("latency");
        Probe probe = new Probe(latency ? Math.max(a.target, 0) : a.target);
        probe.warmup = latency ? 0 : a.warmupRecords;
        Map<String, Object> facts = facts(a);
        KafkaStreams streams = new KafkaStreams(topology(a, probe), config(a));
        probe.streams = streams;
        CountDownLatch wake = probe.reached; // target reached, a stream thread failed, or a stop signal
        Throwable[] error = new Throwable[1];
        streams.setUncaughtExceptionHandler(e -> {
            error[0] = e;
            wake.countDown();
            return StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
        });
        onStopSignals(wake);
        streams.start();
        wake.await((long) (a.timeoutS * 1e9), TimeUnit.NANOSECONDS);
        boolean reached = probe.target > 0 && probe.tLast != 0;

        if (error[0] != null && !reached) {
            streams.close(Duration.ofSeconds(30));
            Map<String, Object> r = probe.result();
            r.put("ok", false);
            r.put("error", "stream thread failed: " + error[0]);
            r.put("processed", probe.n.get());
            emit(merged(r, facts));
            return 0;
        }
        if (!reached) {
            String why = signalled ? "signal" : "timeout";
            if (latency) {
                if (probe.hasFirst()) probe.last(probe.n.get());
                streams.close(Duration.ofSeconds(30));
                emit(merged(latencyResult(probe, why), facts));
            } else {
                long n = probe.n.get();
                streams.close(Duration.ofSeconds(30));
                Map<String, Object> r = new LinkedHashMap<>();
                r.put("ok", false);
                r.put("error", signalled ? "terminated by signal" : "timeout after " + a.timeoutS + " s");
                r.put("processed", n);
                emit(merged(r, facts));
            }
            return 0;
        }
        // Target reached: wait for the next commit (it makes the last output visible), then close.
        double before = probe.commitsAtLast;
        long waitUntil = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(a.commitIntervalMs + 30_000);
        double commits = commitTotal(streams);
        while (!Double.isNaN(before) && commits <= before && System.nanoTime() < waitUntil
                && !signalled && error[0] == null) {
            Thread.sleep(2);
            commits = commitTotal(streams);
        }
        if (!Double.isNaN(before) && commits > before) probe.tCommitted = System.nanoTime();
        long tClose = System.nanoTime();
        // Leave the group on close (outside the timed window): a restore run on the same
        // application id then joins at once instead of waiting out this member's session.
        boolean closed = streams.close(CloseOptions.timeout(Duration.ofSeconds(60))
                .withGroupMembershipOperation(CloseOptions.GroupMembershipOperation.LEAVE_GROUP));
        Map<String, Object> r = probe.result();
        if (latency) r.put("stopped_by", "target");
        r.put("commits", Double.isNaN(commits) ? null : (long) commits);
        r.put("close_seconds", (System.nanoTime() - tClose) / 1e9);
        r.put("closed_cleanly", closed);
        if (error[0] != null) {
            r.put("ok", false);
            r.put("error", "stream thread failed after the target: " + error[0]);
        } else if (!closed) {
            r.put("ok", false);
            r.put("error", "close (final commit) did not finish within 60 s");
        }
        emit(merged(r, facts));
        return 0;
    }

    static Map<String, Object> latencyResult(Probe probe, String stoppedBy) {
        Map<String, Object> r = probe.result();
        if (!probe.hasFirst()) {
            r.put("ok", false);
            r.put("error", "no record processed");
        }
        r.put("stopped_by", stoppedBy);
        return r;
    }

    // --- restore --------------------------------------------------------------------------------

    /** Counts restoration; timed from the first store partition's onRestoreStart to the last onRestoreEnd. */
    static final class RestoreProbe implements StateRestoreListener {
        final Map<TopicPartition, Long> started = new java.util.concurrent.ConcurrentHashMap<>();
        final Map<TopicPartition, Long> ended = new java.util.concurrent.ConcurrentHashMap<>();
        final java.util.concurrent.atomic.AtomicLong batches = new java.util.concurrent.atomic.AtomicLong();
        final java.util.concurrent.atomic.AtomicLong records = new java.util.concurrent.atomic.AtomicLong();
        volatile long tStart, tEnd, cpuStart, cpuEnd;

        @Override
        public synchronized void onRestoreStart(TopicPartition tp, String store, long startOffset, long endOffset) {
            if (tStart == 0) {
                tStart = System.nanoTime();
                cpuStart = cpuNanos();
            }
            started.put(tp, endOffset - startOffset);
        }

        @Override
        public void onBatchRestored(TopicPartition tp, String store, long batchEndOffset, long numRestored) {
            batches.incrementAndGet();
        }

        @Override
        public synchronized void onRestoreEnd(TopicPartition tp, String store, long totalRestored) {
            ended.put(tp, totalRestored);
            records.addAndGet(totalRestored);
            tEnd = System.nanoTime();
            cpuEnd = cpuNanos();
        }
    }

    static int restore(Args a) throws InterruptedException {
        Map<String, Object> facts = facts(a);
        Probe probe = new Probe(Long.MAX_VALUE); // processing is not measured here
        RestoreProbe rp = new RestoreProbe();
        KafkaStreams streams = new KafkaStreams(topology(a, probe), config(a));
        CountDownLatch running = new CountDownLatch(1);
        Throwable[] error = new Throwable[1];
        streams.setGlobalStateRestoreListener(rp);
        streams.setStateListener((now, old) -> {
            if (now == KafkaStreams.State.RUNNING) running.countDown();
        });
        streams.setUncaughtExceptionHandler(e -> {
            error[0] = e;
            running.countDown();
            return StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
        });
        onStopSignals(running);
        streams.start();
        long deadline = System.nanoTime() + (long) (a.timeoutS * 1e9);
        // RUNNING is reached once every active task is restored; a rebalance may go through
        // RUNNING more than once, so also wait until every partition that started has ended.
        boolean ok = running.await((long) (a.timeoutS * 1e9), TimeUnit.NANOSECONDS);
        while (ok && error[0] == null && !signalled && rp.ended.size() < rp.started.size()
                && System.nanoTime() < deadline) {
            Thread.sleep(5);
        }
        Map<String, Object> r = new LinkedHashMap<>();
        if (error[0] != null) {
            r.put("ok", false);
            r.put("error", "stream thread failed: " + error[0]);
            r.put("records", rp.records.get());
        } else if (!ok || signalled || rp.ended.size() < rp.started.size()) {
            r.put("ok", false);
            r.put("error", signalled ? "terminated by signal" : "restore did not finish");
            r.put("records", rp.records.get());
        } else if (rp.records.get() == 0) {
            r.put("ok", false);
            r.put("error", "nothing was restored");
            r.put("records", 0);
        } else {
            long records = rp.records.get();
            double secs = Math.max((rp.tEnd - rp.tStart) / 1e9, 1e-9);
            double cpu = (rp.cpuEnd - rp.cpuStart) / 1e9;
            r.put("ok", true);
            r.put("records", records);
            r.put("seconds", secs);
            r.put("rate", records / secs);
            r.put("cpu_seconds", cpu);
            r.put("cpu_us_per_record", cpu / records * 1e6);
            r.put("store_partitions", rp.ended.size());
            r.put("restore_batches", rp.batches.get());
            r.put("timed_from", "first onRestoreStart to last onRestoreEnd");
        }
        streams.close(Duration.ofSeconds(30));
        emit(merged(r, facts));
        return 0;
    }

    private KStreamsBench() {
    }
}
