//! `POST /v1/embeddings`: deterministic unit vectors of the model's dimension
//! (`dimensions` honoured), as floats or `encoding_format: "base64"` (little-endian f32),
//! with exact `prompt_tokens`. The whole answer depends only on the body, so it is
//! rendered once per distinct body.

use base64::Engine as _;
use bytes::Bytes;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::plan::{self, rng_for};

/// Native dimension of an embedding model.
pub fn model_dimensions(model: &str) -> usize {
    if model.starts_with("text-embedding-3-large") {
        3072
    } else {
        1536
    }
}

#[derive(Serialize)]
#[serde(untagged)]
enum Vector {
    Float(Vec<f32>),
    Base64(String),
}

#[derive(Serialize)]
struct Item {
    object: &'static str,
    index: usize,
    embedding: Vector,
}

#[derive(Serialize)]
struct Usage {
    prompt_tokens: u64,
    total_tokens: u64,
}

#[derive(Serialize)]
struct List<'a> {
    object: &'static str,
    data: Vec<Item>,
    model: &'a str,
    usage: Usage,
}

/// Returns the rendered body.
pub(crate) fn prepare(
    body: &Map<String, Value>,
    model: &str,
    seed: u64,
) -> Result<Bytes, ApiError> {
    let enc = plan::encoding(model);
    let invalid_input = || {
        ApiError::invalid("'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference.").param("input")
    };
    let inputs: Vec<Value> = match body.get("input") {
        None | Some(Value::Null) => return Err(ApiError::missing("input")),
        Some(Value::String(s)) if s.is_empty() => return Err(invalid_input()),
        Some(s @ Value::String(_)) => vec![s.clone()],
        Some(Value::Array(a)) if a.is_empty() => return Err(invalid_input()),
        Some(Value::Array(a)) if a[0].is_number() => vec![Value::Array(a.clone())],
        Some(Value::Array(a)) => a.clone(),
        Some(_) => return Err(invalid_input()),
    };
    let native = model_dimensions(model);
    let dims = match plan::int_field(body, "dimensions", 1, native as u64)? {
        Some(_) if model == "text-embedding-ada-002" => {
            return Err(
                ApiError::invalid("This model does not support specifying dimensions.")
                    .param("dimensions"),
            );
        }
        Some(d) => d as usize,
        None => native,
    };
    let base64 = match plan::str_field(body, "encoding_format")? {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "Invalid value for 'encoding_format': '{other}'. Supported values are 'float' and 'base64'."
            ))
            .param("encoding_format"));
        }
    };
    let mut prompt_tokens = 0u64;
    let mut data = Vec::with_capacity(inputs.len());
    for (index, input) in inputs.iter().enumerate() {
        prompt_tokens += match input {
            Value::String(s) if !s.is_empty() => enc.count(s) as u64,
            Value::Array(ids) if !ids.is_empty() && ids.iter().all(Value::is_u64) => {
                ids.len() as u64
            }
            _ => return Err(invalid_input()),
        };
        let v = unit_vector(seed, model, input, dims);
        let embedding = if base64 {
            let bytes: Vec<u8> = v.iter().flat_map(|f| f.to_le_bytes()).collect();
            Vector::Base64(base64::engine::general_purpose::STANDARD.encode(bytes))
        } else {
            Vector::Float(v)
        };
        data.push(Item {
            object: "embedding",
            index,
            embedding,
        });
    }
    let list = List {
        object: "list",
        data,
        model,
        usage: Usage {
            prompt_tokens,
            total_tokens: prompt_tokens,
        },
    };
    Ok(Bytes::from(serde_json::to_vec(&list).unwrap_or_default()))
}

/// A unit vector determined by the seed, the model, the input and the dimension.
pub fn unit_vector(seed: u64, model: &str, input: &Value, dims: usize) -> Vec<f32> {
    let mut h = blake3::Hasher::new_derive_key("prefixcache-mock 2025 embedding v1");
    h.update(&seed.to_le_bytes());
    h.update(model.as_bytes());
    h.update(&[0]);
    h.update(&(dims as u64).to_le_bytes());
    h.update(&prefixcache_core::key::canonical_value(input));
    let mut rng = rng_for(&h.finalize(), 0);
    let mut v: Vec<f32> = (0..dims).map(|_| (rng.unit() * 2.0 - 1.0) as f32).collect();
    let norm = v
        .iter()
        .map(|x| f64::from(*x) * f64::from(*x))
        .sum::<f64>()
        .sqrt();
    if norm > 0.0 {
        for x in &mut v {
            *x = (f64::from(*x) / norm) as f32;
        }
    }
    v
}
