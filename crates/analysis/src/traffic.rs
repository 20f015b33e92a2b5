//! Which strategy a logged request belongs to and with what settings: the logged
//! `strategy` (or `service`) when there is one, else the first matcher of the config
//! given with `--config` (as the proxy would pick), else `default`. Settings
//! (granularity, minimum prefix, whitespace normalization, TTL, sampling policy,
//! `prompt_cache_key`) come from that config's strategy of the same name, else the
//! built-in defaults; `--granularity` and `--model` override granularity and encoding.

use std::path::Path;

use prefixcache_core::config::{Config, DEFAULT_STRATEGY, DEFAULT_TTL, Layers, Strategy};
use prefixcache_core::key::Namespace;
use prefixcache_core::prefix::FamilyParams;
use prefixcache_core::tokenizer::{Encoding, encoding_for_model};

use crate::error::AnalysisError;
use crate::input::{LogRecord, TenantId};

/// How requests map to strategies, and their settings.
#[derive(Debug, Clone)]
pub struct Traffic {
    config: Option<Config>,
    default: Strategy,
    granularity: Option<usize>,
    encoding: Option<Encoding>,
}

impl Traffic {
    /// `config`: a loaded `prefixcache.toml`; `granularity`: overrides every strategy's
    /// `prefix_granularity`; `model`: the encoding of every request is this model's.
    pub fn new(config: Option<Config>, granularity: Option<usize>, model: Option<&str>) -> Traffic {
        let default = config
            .as_ref()
            .map(|c| c.default_strategy().clone())
            .unwrap_or_else(|| Strategy::default_with_ttl(DEFAULT_TTL));
        Traffic {
            config,
            default,
            granularity,
            encoding: model.map(|m| encoding_for_model(m).encoding),
        }
    }

    /// Reads and validates a config file, as `serve` would (without the environment:
    /// an offline tool should give the same answer on any machine).
    pub fn load_config(path: &Path) -> Result<Config, AnalysisError> {
        let text = std::fs::read_to_string(path).map_err(|e| AnalysisError::io(path, e))?;
        Config::load(Layers {
            file: Some(text),
            env: Vec::new(),
            flags: Vec::new(),
        })
        .map_err(|e| AnalysisError::Config(format!("{}: {e}", path.display())))
    }

    pub fn config(&self) -> Option<&Config> {
        self.config.as_ref()
    }

    /// The strategy (group) name of a logged request.
    pub fn group_of(&self, rec: &LogRecord) -> String {
        if let Some(g) = &rec.group {
            return g.clone();
        }
        match &self.config {
            Some(c) => c
                .strategy_for(None, rec.request_model(), rec.route.path())
                .map_or_else(|_| DEFAULT_STRATEGY.to_string(), |s| s.name.clone()),
            None => DEFAULT_STRATEGY.to_string(),
        }
    }

    /// The settings of a strategy by name (the default's when the config has none of
    /// that name), with the `--granularity` override applied.
    pub fn strategy(&self, name: &str) -> Strategy {
        let mut s = self
            .config
            .as_ref()
            .and_then(|c| c.strategy(name))
            .cloned()
            .unwrap_or_else(|| Strategy {
                name: name.to_string(),
                ..self.default.clone()
            });
        if let Some(g) = self.granularity {
            s.prefix_granularity = g;
        }
        s
    }

    /// The encoding of a request to `model` (or the `--model` override).
    pub fn encoding(&self, model: &str) -> Encoding {
        self.encoding
            .unwrap_or_else(|| encoding_for_model(model).encoding)
    }

    /// Family parameters of a strategy for a request to `model`.
    pub fn family_params(&self, strategy: &Strategy, model: &str) -> FamilyParams {
        FamilyParams {
            encoding: self.encoding(model),
            ..FamilyParams::for_strategy(strategy, model)
        }
    }
}

/// The namespace standing in for a tenant in cache keys. The log holds only a tag of
/// the real namespace; any injective stand-in gives the same hits and misses, because
/// keys are compared, never shown.
pub fn namespace_of(tenant: TenantId) -> Namespace {
    if tenant == TenantId::SHARED {
        return Namespace::shared();
    }
    Namespace(blake3::derive_key(
        "prefixcache analysis namespace v1",
        &tenant.0.to_le_bytes(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::parse_line;

    #[test]
    fn groups_come_from_the_log_then_the_config() {
        let config = Config::load(Layers {
            file: Some(
                "[strategies.docs]\nmatch = { model = \"gpt-4o*\" }\nprefix_granularity = 100\n\
                 [strategies.default]\nprefix_granularity = 30\n"
                    .to_string(),
            ),
            ..Default::default()
        })
        .unwrap();
        let t = Traffic::new(Some(config), None, None);
        let rec = |line: &str| parse_line(line.as_bytes(), 1).unwrap().unwrap();
        assert_eq!(
            t.group_of(&rec(r#"{"model":"gpt-4o-mini","messages":[]}"#)),
            "docs"
        );
        assert_eq!(
            t.group_of(&rec(r#"{"model":"gpt-4","messages":[]}"#)),
            "default"
        );
        assert_eq!(
            t.group_of(&rec(
                r#"{"strategy":"manual","request":{"model":"gpt-4o","messages":[]}}"#
            )),
            "manual"
        );
        assert_eq!(t.strategy("docs").prefix_granularity, 100);
        assert_eq!(
            t.strategy("manual").prefix_granularity,
            30,
            "unknown names get the default's settings"
        );
        assert_eq!(t.strategy("manual").name, "manual");
        let o = Traffic::new(None, Some(75), Some("gpt-4"));
        assert_eq!(o.strategy("x").prefix_granularity, 75);
        assert_eq!(o.encoding("gpt-4o"), Encoding::Cl100kBase);
        assert_ne!(namespace_of(TenantId(3)), namespace_of(TenantId(5)));
    }
}
