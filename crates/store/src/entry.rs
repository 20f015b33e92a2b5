//! The versioned binary encoding of an [`Entry`], shared by the disk and Redis stores.
//!
//! # Layout (all integers little-endian)
//!
//! ```text
//! offset  size  field
//! 0       4     magic b"PXCE"
//! 4       1     format version (FORMAT_VERSION)
//! 5       1     flags: bit 0 body is lz4 block-compressed, bit 1 family present
//! 6       2     reserved, zero
//! 8       4     header length H
//! 12      4     header CRC-32: over bytes 0..12 and the header
//! 16      H     header: created_at_ms u64, expires_at_ms u64, request_hash [32],
//!               route u8, form u8, namespace_tag [8], family [32] (if flagged),
//!               usage 5 x u64 (prompt, completion, cached, cache write, of which long
//!               lifetime; version 1 has the first four), body length u64, stored body
//!               length u64,
//!               strategy (u32 length + UTF-8), model (u32 length + UTF-8)
//! 16+H    S     body as stored (compressed or raw)
//! end-4   4     CRC-32 over everything before it
//! ```
//!
//! Why CRC-32 (crc32fast, SSE4.2/PCLMUL accelerated, well above 10 GB/s): it is the
//! cheapest checksum that *guarantees* detection of any single corrupted byte (any burst
//! of up to 32 bits), which a fast non-cryptographic hash only makes likely. Entries are
//! cache data, not adversarial input: nothing here needs a cryptographic hash, and the
//! entry's request hash is compared on every hit anyway.
//!
//! Why a separate header CRC: purge reads only headers (a Redis `GETRANGE`, a disk scan
//! that skips decompression) and must trust what it reads there without the body.
//!
//! Version rule: a reader decodes its own [`FORMAT_VERSION`] and the older versions it
//! has a migration rule for ([`OLDEST_READABLE_VERSION`]); anything else is
//! [`DecodeError::UnsupportedVersion`], which the stores treat as a miss and delete. A
//! format change bumps the version, so an entry is re-fetched or migrated, never
//! misread. Writers always write the current version.
//!
//! Migrations: version 1 → 2 added the usage's long-lifetime cache writes
//! (`Usage::cache_write_long_tokens`). A version-1 entry decodes with 0 there, which is
//! exactly what its writer knew: it priced every write at the default lifetime.

use bytes::Bytes;
use prefixcache_core::key::{FamilyId, RequestHash};
use prefixcache_core::route::Route;
use prefixcache_core::usage::Usage;

use crate::{ContentForm, Entry, EntryMeta};

/// First four bytes of every encoded entry.
pub const MAGIC: [u8; 4] = *b"PXCE";
/// The format version this build writes.
pub const FORMAT_VERSION: u8 = 2;
/// The oldest version this build still reads (see the migrations in the module docs).
pub const OLDEST_READABLE_VERSION: u8 = 1;
/// Bodies larger than this are lz4-compressed (and kept compressed only if smaller).
/// Below it the header dominates and compression saves nothing worth the CPU.
pub const COMPRESS_THRESHOLD: usize = 1024;
/// Largest body a decoder will allocate for; a header claiming more is malformed.
/// Responses are bounded far below this by the proxy's own limits.
pub const MAX_BODY_BYTES: u64 = 1 << 30;

const PREAMBLE: usize = 16;
const TRAILER: usize = 4;
const FLAG_LZ4: u8 = 1;
/// Usage counters in the header of the current version.
const USAGE_FIELDS: usize = 5;
const FLAG_FAMILY: u8 = 2;
const KNOWN_FLAGS: u8 = FLAG_LZ4 | FLAG_FAMILY;

/// Why bytes did not decode to an entry. Stores turn every variant into a miss and
/// delete the bytes; none of them is ever a wrong entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("entry is truncated")]
    Truncated,
    #[error("not a prefixcache entry (bad magic)")]
    BadMagic,
    #[error(
        "entry format version {0} is not supported (this build reads {OLDEST_READABLE_VERSION} to {FORMAT_VERSION})"
    )]
    UnsupportedVersion(u8),
    #[error("entry checksum mismatch")]
    Checksum,
    #[error("malformed entry: {0}")]
    Malformed(&'static str),
}

impl DecodeError {
    /// Short label for logs and metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            DecodeError::Truncated => "truncated",
            DecodeError::BadMagic => "bad_magic",
            DecodeError::UnsupportedVersion(_) => "old_version",
            DecodeError::Checksum => "checksum",
            DecodeError::Malformed(_) => "malformed",
        }
    }
}

/// Encodes an entry. Infallible: every [`Entry`] has an encoding.
pub fn encode(entry: &Entry) -> Vec<u8> {
    let meta = &entry.meta;
    let body = &entry.body[..];
    let compressed = if body.len() > COMPRESS_THRESHOLD {
        let c = lz4_flex::block::compress(body);
        (c.len() < body.len()).then_some(c)
    } else {
        None
    };
    let stored: &[u8] = compressed.as_deref().unwrap_or(body);
    let mut flags = 0u8;
    if compressed.is_some() {
        flags |= FLAG_LZ4;
    }
    if meta.family.is_some() {
        flags |= FLAG_FAMILY;
    }

    let header_len = 8
        + 8
        + 32
        + 1
        + 1
        + 8
        + if meta.family.is_some() { 32 } else { 0 }
        + USAGE_FIELDS * 8
        + 8
        + 8
        + 4
        + meta.strategy.len()
        + 4
        + meta.model.len();
    let mut out = Vec::with_capacity(PREAMBLE + header_len + stored.len() + TRAILER);
    out.extend_from_slice(&MAGIC);
    out.push(FORMAT_VERSION);
    out.push(flags);
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&(header_len as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]); // header CRC, filled in below

    out.extend_from_slice(&meta.created_at_ms.to_le_bytes());
    out.extend_from_slice(&meta.expires_at_ms.to_le_bytes());
    out.extend_from_slice(meta.request_hash.as_bytes());
    out.push(route_code(meta.route));
    out.push(form_code(meta.form));
    out.extend_from_slice(&meta.namespace_tag);
    if let Some(family) = &meta.family {
        out.extend_from_slice(family.as_bytes());
    }
    for n in [
        meta.usage.prompt_tokens,
        meta.usage.completion_tokens,
        meta.usage.cached_tokens,
        meta.usage.cache_write_tokens,
        meta.usage.cache_write_long_tokens,
    ] {
        out.extend_from_slice(&n.to_le_bytes());
    }
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(&(stored.len() as u64).to_le_bytes());
    for s in [&meta.strategy, &meta.model] {
        out.extend_from_slice(&(s.len() as u32).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }
    debug_assert_eq!(out.len(), PREAMBLE + header_len);

    let mut h = crc32fast::Hasher::new();
    h.update(&out[..12]);
    h.update(&out[PREAMBLE..]);
    out[12..16].copy_from_slice(&h.finalize().to_le_bytes());

    out.extend_from_slice(stored);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Decodes an entry, copying the body out of `buf`.
pub fn decode(buf: &[u8]) -> Result<Entry, DecodeError> {
    decode_with(buf, |range| Bytes::copy_from_slice(&buf[range]))
}

/// Decodes an entry that is already in a [`Bytes`]; an uncompressed body is a zero-copy
/// slice of it (Redis replies arrive as `Bytes`).
pub fn decode_bytes(buf: &Bytes) -> Result<Entry, DecodeError> {
    decode_with(buf, |range| buf.slice(range))
}

/// How many leading bytes of an encoded entry [`decode_meta`] needs, read from its
/// first 16 bytes. Lets a remote store fetch a header with one ranged read.
pub fn meta_len(prefix: &[u8]) -> Result<usize, DecodeError> {
    let p = Preamble::parse(prefix)?;
    Ok(PREAMBLE + p.header_len)
}

/// Decodes only the metadata, from a prefix of an encoded entry at least [`meta_len`]
/// long, checking the header CRC but not reading the body. For purge and stats scans.
pub fn decode_meta(prefix: &[u8]) -> Result<EntryMeta, DecodeError> {
    let p = Preamble::parse(prefix)?;
    let header = p.verified_header(prefix)?;
    Ok(Header::parse(header, p.version, p.flags)?.meta)
}

fn decode_with(
    buf: &[u8],
    body: impl FnOnce(std::ops::Range<usize>) -> Bytes,
) -> Result<Entry, DecodeError> {
    let p = Preamble::parse(buf)?;
    // The whole-entry CRC first: after it passes, every length below is the writer's.
    if buf.len() < PREAMBLE + p.header_len + TRAILER {
        return Err(DecodeError::Truncated);
    }
    let (content, trailer) = buf.split_at(buf.len() - TRAILER);
    if crc32fast::hash(content).to_le_bytes() != trailer {
        return Err(DecodeError::Checksum);
    }
    let header = p.verified_header(buf)?;
    let Header {
        meta,
        body_len,
        stored_len,
    } = Header::parse(header, p.version, p.flags)?;
    let start = PREAMBLE + p.header_len;
    if stored_len != (content.len() - start) as u64 {
        return Err(DecodeError::Malformed("stored body length does not match"));
    }
    let body = if p.flags & FLAG_LZ4 != 0 {
        let raw = lz4_flex::block::decompress(&content[start..], body_len as usize)
            .map_err(|_| DecodeError::Malformed("body does not decompress"))?;
        if raw.len() as u64 != body_len {
            return Err(DecodeError::Malformed("decompressed length does not match"));
        }
        Bytes::from(raw)
    } else {
        if body_len != stored_len {
            return Err(DecodeError::Malformed("raw body length does not match"));
        }
        body(start..content.len())
    };
    Ok(Entry { meta, body })
}

struct Preamble {
    version: u8,
    flags: u8,
    header_len: usize,
}

impl Preamble {
    fn parse(buf: &[u8]) -> Result<Preamble, DecodeError> {
        if buf.len() < 6 {
            return Err(if MAGIC.starts_with(&buf[..buf.len().min(4)]) {
                DecodeError::Truncated
            } else {
                DecodeError::BadMagic
            });
        }
        if buf[..4] != MAGIC {
            return Err(DecodeError::BadMagic);
        }
        let version = buf[4];
        if !(OLDEST_READABLE_VERSION..=FORMAT_VERSION).contains(&version) {
            return Err(DecodeError::UnsupportedVersion(version));
        }
        if buf.len() < PREAMBLE {
            return Err(DecodeError::Truncated);
        }
        let flags = buf[5];
        if flags & !KNOWN_FLAGS != 0 || buf[6..8] != [0, 0] {
            return Err(DecodeError::Malformed("unknown flags"));
        }
        let header_len = u32::from_le_bytes([buf[8], buf[9], buf[10], buf[11]]) as usize;
        Ok(Preamble {
            version,
            flags,
            header_len,
        })
    }

    fn verified_header<'a>(&self, buf: &'a [u8]) -> Result<&'a [u8], DecodeError> {
        let header = buf
            .get(PREAMBLE..PREAMBLE + self.header_len)
            .ok_or(DecodeError::Truncated)?;
        let mut h = crc32fast::Hasher::new();
        h.update(&buf[..12]);
        h.update(header);
        if h.finalize().to_le_bytes() != buf[12..16] {
            return Err(DecodeError::Checksum);
        }
        Ok(header)
    }
}

struct Header {
    meta: EntryMeta,
    body_len: u64,
    stored_len: u64,
}

impl Header {
    fn parse(header: &[u8], version: u8, flags: u8) -> Result<Header, DecodeError> {
        let mut r = Reader(header);
        let created_at_ms = r.u64()?;
        let expires_at_ms = r.u64()?;
        let request_hash = RequestHash(r.array()?);
        let route = route_from_code(r.u8()?)?;
        let form = form_from_code(r.u8()?)?;
        let namespace_tag = r.array()?;
        let family = if flags & FLAG_FAMILY != 0 {
            Some(FamilyId(r.array()?))
        } else {
            None
        };
        let usage = Usage {
            prompt_tokens: r.u64()?,
            completion_tokens: r.u64()?,
            cached_tokens: r.u64()?,
            cache_write_tokens: r.u64()?,
            // Version 1 did not carry the split: every write at the default lifetime.
            cache_write_long_tokens: if version >= 2 { r.u64()? } else { 0 },
        };
        let body_len = r.u64()?;
        let stored_len = r.u64()?;
        if body_len > MAX_BODY_BYTES || stored_len > MAX_BODY_BYTES {
            return Err(DecodeError::Malformed("body length out of range"));
        }
        let strategy = r.string()?;
        let model = r.string()?;
        if !r.0.is_empty() {
            return Err(DecodeError::Malformed("trailing bytes in header"));
        }
        Ok(Header {
            meta: EntryMeta {
                created_at_ms,
                expires_at_ms,
                request_hash,
                route,
                form,
                strategy,
                family,
                namespace_tag,
                model,
                usage,
            },
            body_len,
            stored_len,
        })
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError::Malformed("header too short"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn string(&mut self) -> Result<String, DecodeError> {
        let len = u32::from_le_bytes(self.array()?) as usize;
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError::Malformed("string is not UTF-8"))
    }
}

// Codes are part of the format: never renumber, only add.
fn route_code(route: Route) -> u8 {
    match route {
        Route::ChatCompletions => 1,
        Route::Completions => 2,
        Route::Embeddings => 3,
        Route::Responses => 4,
    }
}

fn route_from_code(code: u8) -> Result<Route, DecodeError> {
    match code {
        1 => Ok(Route::ChatCompletions),
        2 => Ok(Route::Completions),
        3 => Ok(Route::Embeddings),
        4 => Ok(Route::Responses),
        _ => Err(DecodeError::Malformed("unknown route")),
    }
}

fn form_code(form: ContentForm) -> u8 {
    match form {
        ContentForm::Json => 1,
        ContentForm::Sse => 2,
    }
}

fn form_from_code(code: u8) -> Result<ContentForm, DecodeError> {
    match code {
        1 => Ok(ContentForm::Json),
        2 => Ok(ContentForm::Sse),
        _ => Err(DecodeError::Malformed("unknown content form")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample(body: Vec<u8>, family: bool) -> Entry {
        Entry {
            meta: EntryMeta {
                created_at_ms: 1_700_000_000_000,
                expires_at_ms: 1_700_086_400_000,
                request_hash: RequestHash([7; 32]),
                route: Route::ChatCompletions,
                form: ContentForm::Sse,
                strategy: "document_analysis".into(),
                family: family.then_some(FamilyId([9; 32])),
                namespace_tag: [1, 2, 3, 4, 5, 6, 7, 8],
                model: "gpt-4o-mini-2024-07-18".into(),
                usage: Usage {
                    prompt_tokens: 1200,
                    completion_tokens: 80,
                    cached_tokens: 1024,
                    cache_write_tokens: 3,
                    cache_write_long_tokens: 2,
                },
            },
            body: Bytes::from(body),
        }
    }

    fn json_body(n: usize) -> Vec<u8> {
        let mut s = String::from("{\"choices\":[");
        let mut i = 0;
        while s.len() < n {
            s.push_str(&format!("{{\"index\":{i},\"text\":\"hello world\"}},"));
            i += 1;
        }
        s.push_str("]}");
        s.into_bytes()
    }

    fn noise(n: usize) -> Vec<u8> {
        // xorshift: incompressible without pulling in rand.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn round_trips_small_and_large() {
        for (body, family) in [
            (vec![], false),
            (b"{}".to_vec(), true),
            (json_body(5000), true),
            (json_body(3 << 20), false),
            (noise(10_000), true),
        ] {
            let e = sample(body, family);
            let bytes = encode(&e);
            assert_eq!(decode(&bytes).unwrap(), e);
            assert_eq!(decode_bytes(&Bytes::from(bytes.clone())).unwrap(), e);
            assert_eq!(decode_meta(&bytes).unwrap(), e.meta);
        }
    }

    #[test]
    fn large_repetitive_bodies_are_compressed_and_noise_is_not() {
        let json = sample(json_body(100_000), true);
        let bytes = encode(&json);
        assert_eq!(bytes[5] & FLAG_LZ4, FLAG_LZ4);
        assert!(bytes.len() < json.body.len() / 2, "{} bytes", bytes.len());

        let rnd = sample(noise(100_000), true);
        let bytes = encode(&rnd);
        assert_eq!(bytes[5] & FLAG_LZ4, 0, "incompressible body stored raw");

        let small = sample(json_body(COMPRESS_THRESHOLD - 10), true);
        assert_eq!(encode(&small)[5] & FLAG_LZ4, 0);
    }

    #[test]
    fn meta_is_readable_from_a_prefix() {
        let e = sample(json_body(50_000), true);
        let bytes = encode(&e);
        let n = meta_len(&bytes[..16]).unwrap();
        assert!(n < 256, "header fits one small ranged read: {n}");
        assert_eq!(decode_meta(&bytes[..n]).unwrap(), e.meta);
        assert_eq!(decode_meta(&bytes[..n - 1]), Err(DecodeError::Truncated));
    }

    #[test]
    fn every_flipped_byte_is_detected() {
        for e in [
            sample(b"{\"id\":1}".to_vec(), true),
            sample(json_body(4000), false),
        ] {
            let good = encode(&e);
            for i in 0..good.len() {
                for mask in [0x01u8, 0x80, 0xff] {
                    let mut bad = good.clone();
                    bad[i] ^= mask;
                    assert!(
                        decode(&bad).is_err(),
                        "flip {mask:#x} at byte {i} of {} decoded",
                        good.len()
                    );
                }
            }
        }
    }

    #[test]
    fn every_truncation_and_extension_is_detected() {
        let good = encode(&sample(json_body(3000), true));
        for n in 0..good.len() {
            assert!(decode(&good[..n]).is_err(), "truncated to {n} decoded");
        }
        let mut long = good.clone();
        long.push(0);
        assert!(decode(&long).is_err());
        long.pop();
        long.extend_from_slice(&good);
        assert!(decode(&long).is_err(), "two entries back to back");
    }

    #[test]
    fn other_versions_and_foreign_bytes_are_refused() {
        let mut bytes = encode(&sample(b"x".to_vec(), false));
        bytes[4] = 0;
        assert_eq!(decode(&bytes), Err(DecodeError::UnsupportedVersion(0)));
        // (Version 1 is readable, but these bytes are version 2's layout: the checksums
        // and lengths refuse them rather than misread them.)
        bytes[4] = 1;
        assert!(decode(&bytes).is_err());
        bytes[4] = FORMAT_VERSION + 1;
        assert_eq!(
            decode(&bytes),
            Err(DecodeError::UnsupportedVersion(FORMAT_VERSION + 1))
        );
        assert_eq!(decode(b"{\"json\": true}"), Err(DecodeError::BadMagic));
        assert_eq!(decode(b""), Err(DecodeError::Truncated));
        assert_eq!(decode(b"PX"), Err(DecodeError::Truncated));
    }

    /// Encodes `e` the way a version-1 writer did: four usage counters, version byte 1.
    fn encode_v1(e: &Entry) -> Vec<u8> {
        let v2 = encode(e);
        let header_len = u32::from_le_bytes([v2[8], v2[9], v2[10], v2[11]]) as usize;
        let header = &v2[PREAMBLE..PREAMBLE + header_len];
        // The usage block sits right after the fixed fields and the family.
        let usage_at = 8 + 8 + 32 + 1 + 1 + 8 + if e.meta.family.is_some() { 32 } else { 0 };
        let mut h1 = header[..usage_at + 4 * 8].to_vec();
        h1.extend_from_slice(&header[usage_at + 5 * 8..]);
        let mut out = v2[..PREAMBLE].to_vec();
        out[4] = 1;
        out[8..12].copy_from_slice(&(h1.len() as u32).to_le_bytes());
        out.extend_from_slice(&h1);
        let mut h = crc32fast::Hasher::new();
        h.update(&out[..12]);
        h.update(&out[PREAMBLE..]);
        out[12..16].copy_from_slice(&h.finalize().to_le_bytes());
        out.extend_from_slice(&v2[PREAMBLE + header_len..v2.len() - TRAILER]);
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    #[test]
    fn version_1_entries_are_migrated_with_no_long_writes() {
        for body in [b"{\"id\":1}".to_vec(), json_body(5000)] {
            let mut e = sample(body, true);
            let v1 = encode_v1(&e);
            assert_eq!(v1[4], 1);
            // What a version-1 writer knew: every write at the default lifetime.
            e.meta.usage.cache_write_long_tokens = 0;
            assert_eq!(decode(&v1).unwrap(), e);
            assert_eq!(decode_meta(&v1[..meta_len(&v1).unwrap()]).unwrap(), e.meta);
            // The bytes are 8 shorter than the current encoding of the same entry.
            assert_eq!(v1.len() + 8, encode(&e).len());
        }
    }

    fn arb_entry() -> impl Strategy<Value = Entry> {
        let body = prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..3000),
            (any::<u8>(), 0usize..20_000).prop_map(|(b, n)| vec![b; n]),
        ];
        (
            (any::<u64>(), any::<u64>(), any::<[u8; 32]>()),
            (0usize..4, any::<bool>(), any::<[u8; 8]>()),
            (
                ".{0,40}",
                ".{0,40}",
                proptest::option::of(any::<[u8; 32]>()),
            ),
            any::<[u64; 5]>(),
            body,
        )
            .prop_map(
                |(
                    (created, expires, hash),
                    (route, sse, tag),
                    (strategy, model, family),
                    u,
                    body,
                )| {
                    Entry {
                        meta: EntryMeta {
                            created_at_ms: created,
                            expires_at_ms: expires,
                            request_hash: RequestHash(hash),
                            route: Route::ALL[route],
                            form: if sse {
                                ContentForm::Sse
                            } else {
                                ContentForm::Json
                            },
                            strategy,
                            family: family.map(FamilyId),
                            namespace_tag: tag,
                            model,
                            usage: Usage {
                                prompt_tokens: u[0],
                                completion_tokens: u[1],
                                cached_tokens: u[2],
                                cache_write_tokens: u[3],
                                cache_write_long_tokens: u[4],
                            },
                        },
                        body: Bytes::from(body),
                    }
                },
            )
    }

    proptest! {
        #[test]
        fn any_entry_round_trips(e in arb_entry()) {
            let bytes = encode(&e);
            prop_assert_eq!(decode(&bytes).unwrap(), e.clone());
            prop_assert_eq!(decode_meta(&bytes).unwrap(), e.meta);
        }

        #[test]
        fn any_single_byte_corruption_is_detected(e in arb_entry(), at in any::<prop::sample::Index>(), mask in 1u8..=255) {
            let mut bytes = encode(&e);
            let i = at.index(bytes.len());
            bytes[i] ^= mask;
            prop_assert!(decode(&bytes).is_err());
        }
    }
}
