//! A snapshot of the process environment, taken once, so tests can inject their own.

use std::collections::BTreeMap;

use super::PlanError;

#[derive(Clone, Debug, Default)]
pub struct Env(BTreeMap<String, String>);

impl Env {
    pub fn from_process() -> Self {
        Env(std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect())
    }

    pub fn from_pairs(pairs: &[(&str, &str)]) -> Self {
        Env(pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect())
    }

    /// The `go` to run: `KO_GO_PATH`, as ko reads it, else `go` from PATH. Refused while
    /// `GOFLAGS` holds `-toolexec`, which every go command would run, `go list` included.
    pub fn go_command(&self) -> Result<String, PlanError> {
        if let Some(flags) = self.get("GOFLAGS") {
            super::refuse_toolexec("GOFLAGS", &[flags])?;
        }
        Ok(self.get("KO_GO_PATH").unwrap_or_else(|| "go".to_string()))
    }

    /// Every variable, for templates whose data is the whole environment.
    pub fn vars(&self) -> &BTreeMap<String, String> {
        &self.0
    }

    pub fn get(&self, key: &str) -> Option<String> {
        self.0.get(key).cloned()
    }
}
