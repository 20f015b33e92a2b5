//! The prefixcache HTTP server. Not built yet.
