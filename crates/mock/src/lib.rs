//! The mock OpenAI upstream (DESIGN.md §10): real wire format, exact usage, simulated
//! provider prompt cache, configurable latency and error models. Not built yet.
