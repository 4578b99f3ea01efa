#!/usr/bin/env node
// leadhub reference partner client in Node.js: publishes events from the .avsc files alone.
//
// Each event is an Avro record in single-object encoding: C3 01, the 8-byte little-endian
// CRC-64-AVRO fingerprint of the schema's parsing canonical form, then the Avro binary body
// (avsc's toBuffer). avsc has no single-object encoder and no CRC-64-AVRO fingerprint, so both
// are written here (see singleObject and crc64Avro). Records go to <prefix>lead.in.<partner>,
// keyed by the participant id's UTF-8 bytes, with kafkajs's DefaultPartitioner (murmur2 of the
// key bytes, the Java client's and the hub's own partitioner).
//
// It publishes four valid events of a case-management partner (ReferralMade, ConsentGranted,
// IntakeCompleted, ContactLogged) and one deliberately bad one: a ContactLogged whose event_id
// is a version-8 UUID, which the schema allows (a string) but the hub refuses (version 8 is
// reserved for events the hub derives): dead-lettered as INVALID_FIELD. Its last line on stdout
// is a JSON summary; logs go to stderr.
'use strict';

const crypto = require('crypto');
const fs = require('fs');
const path = require('path');
const avro = require('avsc');
const { Kafka, Partitioners, logLevel } = require('kafkajs');

const BAD_REASON = 'INVALID_FIELD';
const USAGE = `usage: node index.js [--bootstrap HOST:PORT] [--topic-prefix PREFIX]
       [--partner ID] [--participant ID] [--schemas DIR]
  --bootstrap     Kafka bootstrap servers (env LEADHUB_KAFKA_BOOTSTRAP, default 127.0.0.1:39092)
  --topic-prefix  prefix of the hub's topic names (env LEADHUB_TOPIC_PREFIX, default none)
  --partner       your partner id, a case-management partner (env LEADHUB_PARTNER, default harbor-cm)
  --participant   participant id (env LEADHUB_PARTICIPANT, default a random p-<16 hex>)
  --schemas       the repository's schemas/avro directory (env LEADHUB_SCHEMAS_DIR,
                  default ../../schemas/avro)`;

// --- CRC-64-AVRO (Rabin) fingerprint, as the Avro specification defines it --------------------
// EMPTY is the fingerprint of no bytes; the table is the specification's, built at load time.
// The specification's Java uses signed 64-bit longs and >>>; BigInt masked to 64 bits does the
// same. fingerprint('"int"') is 0x7275d51a3f395c8f, whose little-endian bytes 8f5c393f1ad57572
// are what `leadhub schemas list` prints for such a schema.
const MASK64 = (1n << 64n) - 1n;
const EMPTY = 0xc15d213aa4d7a795n;
const TABLE = Array.from({ length: 256 }, (_, i) => {
  let fp = BigInt(i);
  for (let j = 0; j < 8; j++) {
    fp = (fp >> 1n) ^ (EMPTY & -(fp & 1n));
  }
  return fp & MASK64;
});

/** The CRC-64-AVRO fingerprint of a parsing canonical form, as an unsigned 64-bit BigInt. */
function crc64Avro(canonicalForm) {
  let fp = EMPTY;
  for (const byte of Buffer.from(canonicalForm, 'utf8')) {
    fp = (fp >> 8n) ^ TABLE[Number((fp ^ BigInt(byte)) & 0xffn)];
  }
  return fp;
}

/** A schema's 10-byte single-object header: C3 01 + the fingerprint, little-endian. */
function singleObjectHeader(type) {
  // avsc's getSchema() with no options is the parsing canonical form (full names, no docs,
  // defaults or logical types, attributes in the specification's order).
  const canonical = JSON.stringify(type.getSchema());
  const header = Buffer.alloc(10);
  header[0] = 0xc3;
  header[1] = 0x01;
  header.writeBigUInt64LE(crc64Avro(canonical), 2);
  return header;
}

if (crc64Avro('"int"') !== 0x7275d51a3f395c8fn) {
  throw new Error('CRC-64-AVRO self-check failed');
}

// --- the catalog: the latest version of every type --------------------------------------------

function loadCatalog(dir) {
  if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) {
    throw new SetupError(`no schema directory at ${path.resolve(dir)} ` +
      '(pass --schemas <repository>/schemas/avro)');
  }
  const catalog = new Map();
  for (const file of fs.readdirSync(dir)) {
    const m = /^([A-Za-z][A-Za-z0-9]*)\.v(\d+)\.avsc$/.exec(file);
    if (!m) continue;
    const version = Number(m[2]);
    if ((catalog.get(m[1])?.version ?? 0) < version) {
      const type = avro.Type.forSchema(JSON.parse(fs.readFileSync(path.join(dir, file), 'utf8')));
      catalog.set(m[1], { name: m[1], version, type, header: singleObjectHeader(type) });
    }
  }
  for (const name of ['ReferralMade', 'ConsentGranted', 'IntakeCompleted', 'ContactLogged']) {
    if (!catalog.has(name)) throw new SetupError(`no ${name}.v<N>.avsc in ${path.resolve(dir)}`);
  }
  return catalog;
}

/**
 * Build, check and single-object encode one event of the latest version of `typeName`.
 * source_partner stays null: the hub stamps it from the topic. Timestamps are
 * timestamp-micros longs (JavaScript numbers are exact up to 2^53, about the year 2255).
 */
function encodeEvent(catalog, typeName, eventId, participantId, occurredAt, payload) {
  const entry = catalog.get(typeName);
  const record = {
    event_id: eventId,
    participant_id: participantId,
    occurred_at: micros(occurredAt),
    source_partner: null,
    payload,
  };
  const problems = [];
  if (!entry.type.isValid(record, { errorHook: (p) => problems.push(p.join('.')) })) {
    throw new Error(`${typeName} event does not match its schema at ${problems.join(', ')}`);
  }
  const bytes = Buffer.concat([entry.header, entry.type.toBuffer(record)]);
  return {
    type: typeName,
    version: entry.version,
    eventId,
    fingerprint: entry.header.subarray(2).toString('hex'),
    bytes,
  };
}

function micros(date) {
  return date.getTime() * 1000;
}

function hoursAgo(now, hours) {
  return new Date(now.getTime() - hours * 3600 * 1000);
}

/** A random UUID with its version nibble set to 8: the version the hub reserves for itself. */
function version8Uuid() {
  const id = crypto.randomUUID();
  return id.slice(0, 14) + '8' + id.slice(15);
}

async function run({ bootstrap, prefix, partner, participant, schemas }) {
  const catalog = loadCatalog(schemas);
  const topic = `${prefix}lead.in.${partner}`;
  const now = new Date();
  const referralId = crypto.randomUUID();
  const formSha256 = crypto.createHash('sha256')
    .update('consent form signed on paper, scanned').digest('hex');

  const valid = [
    encodeEvent(catalog, 'ReferralMade', referralId, participant, hoursAgo(now, 3), {
      door: 'COMMUNITY', offense_category: null, charges_held: false, referring_officer: null,
      area: 'Harbor District', warm_handoff_at: null,
    }),
    encodeEvent(catalog, 'ConsentGranted', crypto.randomUUID(), participant, hoursAgo(now, 2), {
      consent_id: `c-${crypto.randomUUID()}`,
      recipients: ['defender-assoc'],
      categories: ['CONTACT', 'HOUSING'],
      purposes: ['legal_defense'],
      valid_from: micros(hoursAgo(now, 2)),
      expires_at: micros(hoursAgo(now, -365 * 24)),
      exceptions: [],
      part2: false,
      form_sha256: formSha256,
    }),
    encodeEvent(catalog, 'IntakeCompleted', crypto.randomUUID(), participant, hoursAgo(now, 1), {
      referral_event_id: referralId, intake_site: 'Harbor Street office', preferred_name: 'Sam',
      date_of_birth: null, phone: null,
    }),
    encodeEvent(catalog, 'ContactLogged', crypto.randomUUID(), participant, hoursAgo(now, 0.5), {
      contact_method: 'OUTREACH', successful: true, duration_minutes: 20,
    }),
  ];
  // The mistake: a well-formed Avro body whose event_id is a version-8 UUID.
  const bad = encodeEvent(catalog, 'ContactLogged', version8Uuid(), participant,
    hoursAgo(now, 0.2), { contact_method: 'PHONE', successful: false, duration_minutes: null });

  const kafka = new Kafka({
    clientId: `leadhub-node-example-${partner}`,
    brokers: bootstrap.split(','),
    logLevel: logLevel.WARN,
    // A secured hub: SASL/SCRAM-SHA-512 as the partner's own principal.
    ...(process.env.LEADHUB_KAFKA_USERNAME ? {
      sasl: {
        mechanism: 'scram-sha-512',
        username: process.env.LEADHUB_KAFKA_USERNAME,
        password: process.env.LEADHUB_KAFKA_PASSWORD ?? '',
      },
    } : {}),
    logCreator: () => ({ namespace, level, log }) => {
      const name = Object.keys(logLevel).find((key) => logLevel[key] === level) ?? level;
      process.stderr.write(`kafkajs ${name} ${namespace}: ${log.message}\n`);
    },
  });
  // DefaultPartitioner: murmur2 of the key bytes, as the Java client and the hub partition.
  // (kafkajs's LegacyPartitioner, and librdkafka's default, put keys elsewhere.)
  const producer = kafka.producer({
    createPartitioner: Partitioners.DefaultPartitioner,
    idempotent: true,
    maxInFlightRequests: 1,
  });
  await producer.connect();
  const key = Buffer.from(participant, 'utf8');
  const summaryOf = (event, [meta], expectedReason) => ({
    event_id: event.eventId,
    type: event.type,
    version: event.version,
    fingerprint: event.fingerprint,
    partition: meta.partition,
    offset: Number(meta.baseOffset),
    ...(expectedReason ? { expected_reason: expectedReason } : {}),
  });
  try {
    const sent = [];
    // One send per event keeps the example simple; a real partner batches its messages.
    for (const event of valid) {
      const meta = await producer.send({ topic, acks: -1, messages: [{ key, value: event.bytes }] });
      sent.push(summaryOf(event, meta));
    }
    const meta = await producer.send({ topic, acks: -1, messages: [{ key, value: bad.bytes }] });
    return {
      client: 'node',
      partner,
      topic,
      participant_id: participant,
      valid: sent,
      bad: summaryOf(bad, meta, BAD_REASON),
    };
  } finally {
    await producer.disconnect();
  }
}

class SetupError extends Error {}

function parseArgs(argv) {
  const names = ['bootstrap', 'topic-prefix', 'partner', 'participant', 'schemas'];
  const args = {};
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '-h' || arg === '--help') {
      args.help = true;
      continue;
    }
    if (!arg.startsWith('--')) throw new SetupError(`unexpected argument ${arg}`);
    let name = arg.slice(2);
    let value;
    const eq = name.indexOf('=');
    if (eq >= 0) {
      value = name.slice(eq + 1);
      name = name.slice(0, eq);
    } else if (i + 1 < argv.length) {
      value = argv[++i];
    } else {
      throw new SetupError(`${arg} needs a value`);
    }
    if (!names.includes(name)) throw new SetupError(`unknown option --${name}`);
    args[name] = value;
  }
  return args;
}

async function main() {
  let args;
  try {
    args = parseArgs(process.argv.slice(2));
  } catch (err) {
    process.stderr.write(`error: ${err.message}\n${USAGE}\n`);
    return 2;
  }
  if (args.help) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  const env = process.env;
  const options = {
    bootstrap: args.bootstrap ?? env.LEADHUB_KAFKA_BOOTSTRAP ?? '127.0.0.1:39092',
    prefix: args['topic-prefix'] ?? env.LEADHUB_TOPIC_PREFIX ?? '',
    partner: args.partner ?? env.LEADHUB_PARTNER ?? 'harbor-cm',
    participant: args.participant ?? env.LEADHUB_PARTICIPANT ??
      `p-${crypto.randomBytes(8).toString('hex')}`,
    schemas: args.schemas ?? env.LEADHUB_SCHEMAS_DIR ?? '../../schemas/avro',
  };
  try {
    const summary = await run(options);
    process.stdout.write(`${JSON.stringify(summary)}\n`);
    return 0;
  } catch (err) {
    if (err instanceof SetupError) {
      process.stderr.write(`error: ${err.message}\n`);
      return 2;
    }
    process.stderr.write(`error: publishing failed: ${err.stack || err}\n`);
    return 1;
  }
}

main().then((code) => { process.exitCode = code; });
