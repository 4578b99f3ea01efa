package org.leadhub.examples;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HexFormat;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.UUID;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

import org.apache.avro.Schema;
import org.apache.avro.SchemaNormalization;
import org.apache.avro.generic.GenericData;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.generic.GenericRecordBuilder;
import org.apache.avro.io.BinaryEncoder;
import org.apache.avro.io.EncoderFactory;
import org.apache.avro.message.BinaryMessageEncoder;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.serialization.ByteArraySerializer;

/**
 * A leadhub partner publishing events from the {@code .avsc} files alone.
 *
 * <p>Each event is an Avro record in single-object encoding ({@code C3 01}, the 8-byte
 * little-endian CRC-64-AVRO fingerprint of the schema's parsing canonical form, the Avro
 * binary body), written by Avro's own {@link BinaryMessageEncoder}, and produced to
 * {@code <prefix>lead.in.<partner>} keyed by the participant id's UTF-8 bytes, with the Kafka
 * client's default partitioner (murmur2 of the key bytes, as the hub's own producers use).
 *
 * <p>It publishes four valid events of a case-management partner (ReferralMade,
 * ConsentGranted, IntakeCompleted, ContactLogged) and one deliberately bad one: a valid
 * ContactLogged whose key is the participant id <em>Avro-encoded</em> (a length varint before
 * the bytes) instead of its raw UTF-8 bytes, which the hub dead-letters as
 * {@code KEY_MISMATCH}. Its last line on stdout is a JSON summary; logs go to stderr.
 */
public final class ReferenceClient {

    private static final Pattern AVSC = Pattern.compile("([A-Za-z][A-Za-z0-9]*)\\.v(\\d+)\\.avsc");
    private static final String BAD_REASON = "KEY_MISMATCH";

    private final Map<String, Schema> latest;
    private final Map<String, Integer> versions;

    private ReferenceClient(Map<String, Schema> latest, Map<String, Integer> versions) {
        this.latest = latest;
        this.versions = versions;
    }

    public static void main(String[] argv) {
        System.setProperty("org.slf4j.simpleLogger.defaultLogLevel", "warn");
        Map<String, String> args;
        try {
            args = parseArgs(argv);
        } catch (IllegalArgumentException e) {
            System.err.println("error: " + e.getMessage());
            System.err.println(USAGE);
            System.exit(2);
            return;
        }
        if (args.containsKey("help")) {
            System.out.println(USAGE);
            return;
        }
        String bootstrap = option(args, "bootstrap", "LEADHUB_KAFKA_BOOTSTRAP", "127.0.0.1:39092");
        String prefix = option(args, "topic-prefix", "LEADHUB_TOPIC_PREFIX", "");
        String partner = option(args, "partner", "LEADHUB_PARTNER", "harbor-cm");
        String participant = option(args, "participant", "LEADHUB_PARTICIPANT",
                "p-" + UUID.randomUUID().toString().replace("-", "").substring(0, 16));
        String schemas = option(args, "schemas", "LEADHUB_SCHEMAS_DIR", "../../schemas/avro");
        try {
            ReferenceClient client = load(Path.of(schemas));
            System.out.println(client.run(bootstrap, prefix + "lead.in." + partner, partner,
                    participant));
        } catch (SetupError e) {
            System.err.println("error: " + e.getMessage());
            System.exit(2);
        } catch (Exception e) {
            System.err.println("error: publishing failed: " + e);
            System.exit(1);
        }
    }

    private static final String USAGE = String.join("\n",
            "usage: java -jar target/leadhub-java-client.jar [--bootstrap HOST:PORT]",
            "       [--topic-prefix PREFIX] [--partner ID] [--participant ID] [--schemas DIR]",
            "  --bootstrap     Kafka bootstrap servers (env LEADHUB_KAFKA_BOOTSTRAP, default 127.0.0.1:39092)",
            "  --topic-prefix  prefix of the hub's topic names (env LEADHUB_TOPIC_PREFIX, default none)",
            "  --partner       your partner id, a case-management partner (env LEADHUB_PARTNER, default harbor-cm)",
            "  --participant   participant id (env LEADHUB_PARTICIPANT, default a random p-<16 hex>)",
            "  --schemas       the repository's schemas/avro directory (env LEADHUB_SCHEMAS_DIR,",
            "                  default ../../schemas/avro)");

    /** Read the latest version of every type from {@code <Type>.v<N>.avsc} files in {@code dir}. */
    static ReferenceClient load(Path dir) throws IOException {
        if (!Files.isDirectory(dir)) {
            throw new SetupError("no schema directory at " + dir.toAbsolutePath()
                    + " (pass --schemas <repository>/schemas/avro)");
        }
        Map<String, Schema> latest = new HashMap<>();
        Map<String, Integer> versions = new HashMap<>();
        try (DirectoryStream<Path> files = Files.newDirectoryStream(dir, "*.avsc")) {
            for (Path file : files) {
                Matcher m = AVSC.matcher(file.getFileName().toString());
                if (!m.matches()) {
                    continue;
                }
                int version = Integer.parseInt(m.group(2));
                if (versions.getOrDefault(m.group(1), 0) < version) {
                    // A parser per file: two versions of a type define the same names.
                    latest.put(m.group(1), new Schema.Parser().parse(file.toFile()));
                    versions.put(m.group(1), version);
                }
            }
        }
        for (String type : List.of("ReferralMade", "ConsentGranted", "IntakeCompleted",
                "ContactLogged")) {
            if (!latest.containsKey(type)) {
                throw new SetupError("no " + type + ".v<N>.avsc in " + dir.toAbsolutePath());
            }
        }
        return new ReferenceClient(latest, versions);
    }

    private String run(String bootstrap, String topic, String partner, String participant)
            throws IOException, InterruptedException, ExecutionException, TimeoutException {
        Instant now = Instant.now();
        String referralId = UUID.randomUUID().toString();
        String consentFormHash = sha256Hex("consent form signed on paper, scanned".getBytes(
                StandardCharsets.UTF_8));

        List<Event> valid = new ArrayList<>();
        valid.add(event("ReferralMade", referralId, participant, now.minus(Duration.ofHours(3)),
                payload("door", "COMMUNITY", "offense_category", null, "charges_held", false,
                        "referring_officer", null, "area", "Harbor District",
                        "warm_handoff_at", null)));
        valid.add(event("ConsentGranted", UUID.randomUUID().toString(), participant,
                now.minus(Duration.ofHours(2)),
                payload("consent_id", "c-" + UUID.randomUUID(),
                        "recipients", List.of("defender-assoc"),
                        "categories", List.of("CONTACT", "HOUSING"),
                        "purposes", List.of("legal_defense"),
                        "valid_from", micros(now.minus(Duration.ofHours(2))),
                        "expires_at", micros(now.plus(Duration.ofDays(365))),
                        "exceptions", List.of(), "part2", false,
                        "form_sha256", consentFormHash)));
        valid.add(event("IntakeCompleted", UUID.randomUUID().toString(), participant,
                now.minus(Duration.ofHours(1)),
                payload("referral_event_id", referralId, "intake_site", "Harbor Street office",
                        "preferred_name", "Sam", "date_of_birth", null, "phone", null)));
        valid.add(event("ContactLogged", UUID.randomUUID().toString(), participant,
                now.minus(Duration.ofMinutes(30)),
                payload("contact_method", "OUTREACH", "successful", true,
                        "duration_minutes", 20)));
        Event bad = event("ContactLogged", UUID.randomUUID().toString(), participant,
                now.minus(Duration.ofMinutes(10)),
                payload("contact_method", "PHONE", "successful", false,
                        "duration_minutes", null));

        byte[] key = participant.getBytes(StandardCharsets.UTF_8);
        StringBuilder out = new StringBuilder();
        out.append("{\"client\":\"java\",\"partner\":").append(json(partner))
                .append(",\"topic\":").append(json(topic))
                .append(",\"participant_id\":").append(json(participant))
                .append(",\"valid\":[");
        try (KafkaProducer<byte[], byte[]> producer = producer(bootstrap, partner)) {
            for (int i = 0; i < valid.size(); i++) {
                Event e = valid.get(i);
                RecordMetadata meta = send(producer, topic, key, e);
                out.append(i == 0 ? "" : ",").append(e.summary(meta, null));
            }
            // The mistake: the key Avro-encoded (zigzag length varint + bytes) as a schema
            // registry serializer would, instead of the raw UTF-8 bytes of the participant id.
            RecordMetadata meta = send(producer, topic, avroString(participant), bad);
            out.append("],\"bad\":").append(bad.summary(meta, BAD_REASON)).append('}');
        }
        return out.toString();
    }

    private static RecordMetadata send(KafkaProducer<byte[], byte[]> producer, String topic,
            byte[] key, Event event)
            throws InterruptedException, ExecutionException, TimeoutException {
        // Waiting for each acknowledgement keeps the example simple; a real partner sends
        // many and calls flush(), checking every callback.
        return producer.send(new ProducerRecord<>(topic, key, event.bytes))
                .get(30, TimeUnit.SECONDS);
    }

    private static KafkaProducer<byte[], byte[]> producer(String bootstrap, String partner) {
        Properties p = new Properties();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ProducerConfig.CLIENT_ID_CONFIG, "leadhub-java-example-" + partner);
        p.put(ProducerConfig.ACKS_CONFIG, "all");
        p.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, true);
        p.put(ProducerConfig.MAX_BLOCK_MS_CONFIG, 20_000);
        p.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, 30_000);
        p.put(ProducerConfig.REQUEST_TIMEOUT_MS_CONFIG, 10_000);
        // No partitioner.class: the default partitions a keyed record by murmur2 of the key
        // bytes, like the hub's own producers, so a participant's events stay on one partition.
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        String username = System.getenv("LEADHUB_KAFKA_USERNAME");
        if (username != null && !username.isEmpty()) {
            // A secured hub: SASL/SCRAM-SHA-512 as the partner's own principal.
            String password = System.getenv().getOrDefault("LEADHUB_KAFKA_PASSWORD", "");
            p.put("security.protocol", "SASL_PLAINTEXT");
            p.put("sasl.mechanism", "SCRAM-SHA-512");
            p.put("sasl.jaas.config", "org.apache.kafka.common.security.scram.ScramLoginModule"
                    + " required username=" + json(username) + " password=" + json(password) + ";");
        }
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        return new KafkaProducer<>(p);
    }

    /** One encoded event: what was sent, and the facts the summary reports. */
    private record Event(String type, int version, String eventId, String fingerprintHex,
            byte[] bytes) {
        String summary(RecordMetadata meta, String expectedReason) {
            return "{\"event_id\":" + json(eventId) + ",\"type\":" + json(type)
                    + ",\"version\":" + version + ",\"fingerprint\":" + json(fingerprintHex)
                    + ",\"partition\":" + meta.partition() + ",\"offset\":" + meta.offset()
                    + (expectedReason == null ? "" : ",\"expected_reason\":" + json(expectedReason))
                    + "}";
        }
    }

    /**
     * Build, check and single-object encode one event of the latest version of {@code type}.
     * {@code source_partner} stays null: the hub stamps it from the topic.
     */
    private Event event(String type, String eventId, String participant, Instant occurredAt,
            Map<String, Object> fields) throws IOException {
        Schema schema = latest.get(type);
        // The builder fills every field left unset with its schema default (source_partner:
        // null, and fields a newer version added), and refuses to build when one has none.
        GenericRecord record = new GenericRecordBuilder(schema)
                .set("event_id", eventId)
                .set("participant_id", participant)
                .set("occurred_at", micros(occurredAt)) // timestamp-micros: a long
                .set("payload", record(schema.getField("payload").schema(), fields))
                .build();
        if (!GenericData.get().validate(schema, record)) {
            throw new IllegalStateException(type + " event does not match its schema");
        }
        ByteBuffer encoded = new BinaryMessageEncoder<GenericRecord>(GenericData.get(), schema)
                .encode(record);
        byte[] bytes = new byte[encoded.remaining()];
        encoded.get(bytes);
        // The encoder's header is C3 01 + the CRC-64-AVRO of the parsing canonical form,
        // little-endian; `leadhub schemas list` prints those 8 bytes as hex.
        byte[] fingerprint = ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN)
                .putLong(SchemaNormalization.parsingFingerprint64(schema)).array();
        byte[] header = new byte[10];
        System.arraycopy(bytes, 0, header, 0, 10);
        byte[] expected = new byte[10];
        expected[0] = (byte) 0xC3;
        expected[1] = 0x01;
        System.arraycopy(fingerprint, 0, expected, 2, 8);
        if (!java.util.Arrays.equals(header, expected)) {
            throw new IllegalStateException("unexpected single-object header for " + type);
        }
        return new Event(type, versions.get(type), eventId, HexFormat.of().formatHex(fingerprint),
                bytes);
    }

    /**
     * A GenericRecord of {@code schema} from name/value pairs, defaults for the fields not
     * given; enum symbols are given as strings.
     */
    private static GenericRecord record(Schema schema, Map<String, Object> fields) {
        GenericRecordBuilder builder = new GenericRecordBuilder(schema);
        for (Map.Entry<String, Object> entry : fields.entrySet()) {
            Schema.Field field = schema.getField(entry.getKey());
            if (field == null) {
                throw new IllegalArgumentException(schema.getName() + " has no field "
                        + entry.getKey());
            }
            builder.set(field, enumSymbol(field.schema(), entry.getValue()));
        }
        return builder.build();
    }

    /** {@code value} as a symbol of {@code schema}'s enum (or of its union's enum branch). */
    private static Object enumSymbol(Schema schema, Object value) {
        if (!(value instanceof String symbol)) {
            return value;
        }
        for (Schema branch : schema.isUnion() ? schema.getTypes() : List.of(schema)) {
            if (branch.getType() == Schema.Type.STRING) {
                return value;
            }
            if (branch.getType() == Schema.Type.ENUM) {
                return new GenericData.EnumSymbol(branch, symbol);
            }
        }
        return value;
    }

    private static Map<String, Object> payload(Object... pairs) {
        Map<String, Object> map = new LinkedHashMap<>();
        for (int i = 0; i < pairs.length; i += 2) {
            map.put((String) pairs[i], pairs[i + 1]);
        }
        return map;
    }

    private static long micros(Instant instant) {
        return Math.addExact(Math.multiplyExact(instant.getEpochSecond(), 1_000_000L),
                instant.getNano() / 1_000L);
    }

    private static byte[] avroString(String value) throws IOException {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        BinaryEncoder encoder = EncoderFactory.get().binaryEncoder(out, null);
        encoder.writeString(value);
        encoder.flush();
        return out.toByteArray();
    }

    private static String sha256Hex(byte[] data) {
        try {
            return HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256").digest(data));
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
    }

    private static String json(String s) {
        StringBuilder b = new StringBuilder("\"");
        for (char c : s.toCharArray()) {
            switch (c) {
                case '"' -> b.append("\\\"");
                case '\\' -> b.append("\\\\");
                default -> {
                    if (c < 0x20) {
                        b.append(String.format("\\u%04x", (int) c));
                    } else {
                        b.append(c);
                    }
                }
            }
        }
        return b.append('"').toString();
    }

    private static Map<String, String> parseArgs(String[] argv) {
        Map<String, String> args = new HashMap<>();
        for (int i = 0; i < argv.length; i++) {
            String arg = argv[i];
            if (arg.equals("-h") || arg.equals("--help")) {
                args.put("help", "");
                continue;
            }
            if (!arg.startsWith("--")) {
                throw new IllegalArgumentException("unexpected argument " + arg);
            }
            String name = arg.substring(2);
            String value;
            int eq = name.indexOf('=');
            if (eq >= 0) {
                value = name.substring(eq + 1);
                name = name.substring(0, eq);
            } else if (i + 1 < argv.length) {
                value = argv[++i];
            } else {
                throw new IllegalArgumentException(arg + " needs a value");
            }
            if (!List.of("bootstrap", "topic-prefix", "partner", "participant", "schemas")
                    .contains(name)) {
                throw new IllegalArgumentException("unknown option --" + name);
            }
            args.put(name, value);
        }
        return args;
    }

    private static String option(Map<String, String> args, String name, String env,
            String fallback) {
        String value = args.get(name);
        if (value == null) {
            value = System.getenv(env);
        }
        return value == null ? fallback : value;
    }

    /** A usage or setup problem (exit code 2), as opposed to a Kafka failure (exit code 1). */
    private static final class SetupError extends RuntimeException {
        SetupError(String message) {
            super(message);
        }
    }
}
