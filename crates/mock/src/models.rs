//! `GET /v1/models` and `GET /v1/models/{id}`: the models the mock answers for, including
//! the special error-model names.

use serde_json::{Value, json};

/// Model ids listed, with the `created` times the API reports for them.
const MODELS: &[(&str, u64, &str)] = &[
    ("gpt-4o", 1_715_367_049, "system"),
    ("gpt-4o-mini", 1_721_172_741, "system"),
    ("gpt-4.1", 1_744_316_542, "system"),
    ("gpt-4.1-mini", 1_744_318_173, "system"),
    ("gpt-4.1-nano", 1_744_321_707, "system"),
    ("gpt-5", 1_754_425_777, "system"),
    ("gpt-5-mini", 1_754_425_928, "system"),
    ("o3", 1_744_225_308, "system"),
    ("o4-mini", 1_744_225_351, "system"),
    ("gpt-4", 1_687_882_411, "openai"),
    ("gpt-3.5-turbo", 1_677_610_602, "openai"),
    ("gpt-3.5-turbo-instruct", 1_692_901_427, "system"),
    ("text-embedding-3-small", 1_705_948_997, "system"),
    ("text-embedding-3-large", 1_705_953_180, "system"),
    ("text-embedding-ada-002", 1_671_217_299, "openai-internal"),
    ("mock-error-400", 0, "prefixcache-mock"),
    ("mock-error-429", 0, "prefixcache-mock"),
    ("mock-error-500", 0, "prefixcache-mock"),
    ("mock-timeout", 0, "prefixcache-mock"),
    ("mock-cut-stream", 0, "prefixcache-mock"),
];

fn model(id: &str, created: u64, owned_by: &str) -> Value {
    json!({"id": id, "object": "model", "created": created, "owned_by": owned_by})
}

pub(crate) fn list() -> Value {
    json!({
        "object": "list",
        "data": MODELS.iter().map(|(id, c, o)| model(id, *c, o)).collect::<Vec<_>>()
    })
}

/// A listed model, or any other `mock-error-NNN` name.
pub(crate) fn get(id: &str) -> Option<Value> {
    if let Some((id, c, o)) = MODELS.iter().find(|(m, _, _)| *m == id) {
        return Some(model(id, *c, o));
    }
    matches!(
        crate::plan::Special::from_model(id),
        crate::plan::Special::Error(_)
    )
    .then(|| model(id, 0, "prefixcache-mock"))
}
