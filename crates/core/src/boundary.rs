//! Where two prompts' tokens first diverge, and the tokens around that point: the logic
//! behind `prefixcache diff`.
