//! Golden vectors for the entry encoding shared by disk and Redis: fixed entries →
//! bytes, pinned as hex. A change to the encoding that keeps `FORMAT_VERSION` would make
//! replicas of two versions misread each other's entries (or drop them all as corrupt);
//! it must fail here and bump the version (asserted below) with these vectors.

use bytes::Bytes;
use prefixcache_core::key::{FamilyId, RequestHash};
use prefixcache_core::route::Route;
use prefixcache_core::usage::Usage;
use prefixcache_store::entry::{self, FORMAT_VERSION};
use prefixcache_store::{ContentForm, Entry, EntryMeta};

/// The format version these vectors were written under. Bump both together.
const PINNED_FORMAT_VERSION: u8 = 2;

fn meta(form: ContentForm, family: Option<FamilyId>) -> EntryMeta {
    EntryMeta {
        created_at_ms: 1_800_000_000_000,
        expires_at_ms: 1_800_003_600_000,
        request_hash: RequestHash([0x11; 32]),
        route: Route::ChatCompletions,
        form,
        strategy: "default".into(),
        family,
        namespace_tag: [1, 2, 3, 4, 5, 6, 7, 8],
        model: "gpt-4o-mini-2024-07-18".into(),
        usage: Usage {
            prompt_tokens: 1500,
            completion_tokens: 42,
            cached_tokens: 1024,
            cache_write_tokens: 7,
            cache_write_long_tokens: 3,
        },
    }
}

/// A small JSON answer (stored raw: below the compression threshold).
fn small() -> Entry {
    Entry {
        meta: meta(ContentForm::Json, Some(FamilyId([0x22; 32]))),
        body: Bytes::from_static(
            br#"{"id":"chatcmpl-1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}]}"#,
        ),
    }
}

/// A stream above the threshold (stored lz4-compressed), without a family.
fn large() -> Entry {
    let mut body = String::new();
    for i in 0..40 {
        body.push_str(&format!(
            "data: {{\"id\":\"c\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"w{i} \"}}}}]}}\n\n"
        ));
    }
    body.push_str("data: [DONE]\n\n");
    Entry {
        meta: meta(ContentForm::Sse, None),
        body: Bytes::from(body),
    }
}

const SMALL_HEX: &str = concat!(
    "5058434502020000b70000000349eb9d00505c18a3010000803e9318a3010000111111111111111111111111",
    "1111111111111111111111111111111111111111010101020304050607082222222222222222222222222222",
    "222222222222222222222222222222222222dc050000000000002a0000000000000000040000000000000700",
    "00000000000003000000000000008b000000000000008b000000000000000700000064656661756c74160000",
    "006770742d346f2d6d696e692d323032342d30372d31387b226964223a2263686174636d706c2d31222c226f",
    "626a656374223a22636861742e636f6d706c6574696f6e222c2263686f69636573223a5b7b22696e64657822",
    "3a302c226d657373616765223a7b22726f6c65223a22617373697374616e74222c22636f6e74656e74223a22",
    "6869227d2c2266696e6973685f726561736f6e223a2273746f70227d5d7dd724e43f",
);
const LARGE_HEX: &str = concat!(
    "5058434502010000970000008e639a1d00505c18a3010000803e9318a3010000111111111111111111111111",
    "111111111111111111111111111111111111111101020102030405060708dc050000000000002a0000000000",
    "0000000400000000000007000000000000000300000000000000cc0a00000000000013010000000000000700",
    "000064656661756c74160000006770742d346f2d6d696e692d323032342d30372d3138ff35646174613a207b",
    "226964223a2263222c2263686f69636573223a5b7b22696e646578223a302c2264656c7461223a7b22636f6e",
    "74656e74223a22773020227d7d5d7d0a0a4400281f314400301f324400301f334400301f344400301f354400",
    "301f364400301f374400301f384400301f394400301f31a902320faa02311f31ab02311f31ac02311f31ad02",
    "311f31ae02311f31af02311f31b002311f31b102311f31b202311f32b202311f32b202311f32b202311f32b2",
    "02311f32b202311f32b202311f32b202311f32b202311f32b202311f32b202311f33b202311f33b202311f33",
    "b202311f33b202311f33b202311f33b202311f33b202311f33b202311f33b202311b33b202805b444f4e455d",
    "0a0a9e2dbd6d",
);

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn the_format_version_is_the_one_the_vectors_were_written_under() {
    assert_eq!(
        FORMAT_VERSION, PINNED_FORMAT_VERSION,
        "FORMAT_VERSION changed: rewrite the vectors below (and keep a migration rule)"
    );
}

#[test]
fn encoded_entries_are_pinned() {
    let (small, large) = (small(), large());
    assert!(small.body.len() < entry::COMPRESS_THRESHOLD);
    assert!(large.body.len() > entry::COMPRESS_THRESHOLD);
    let got = (hex(&entry::encode(&small)), hex(&entry::encode(&large)));
    assert_eq!(
        (got.0.as_str(), got.1.as_str()),
        (SMALL_HEX, LARGE_HEX),
        "the entry encoding changed; if intended, bump FORMAT_VERSION and pin:\nSMALL_HEX = {}\nLARGE_HEX = {}",
        got.0,
        got.1
    );
}

/// Decoding is the direction replicas depend on: bytes written by this version must
/// read back to the same entry in every later build that keeps the version.
#[test]
fn pinned_bytes_decode_to_the_entries() {
    assert_eq!(entry::decode(&unhex(SMALL_HEX)).unwrap(), small());
    assert_eq!(entry::decode(&unhex(LARGE_HEX)).unwrap(), large());
}

#[test]
fn the_redis_key_space_is_pinned() {
    assert_eq!(prefixcache_store::redis::KEY_PREFIX, "prefixcache:v1:");
    assert_eq!(
        prefixcache_store::redis::SECRET_KEY,
        "prefixcache:v1:tenant-secret"
    );
}
