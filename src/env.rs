//! A snapshot of the process environment, taken once, so tests can inject their own.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::cli::ColorChoice;

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

    /// Whether the log gets ANSI colour. `auto` colours a terminal, and GitHub Actions, whose
    /// log viewer renders it; a redirected log stays plain. A non-empty `NO_COLOR` turns
    /// `auto` off (no-color.org).
    pub fn color(&self, choice: ColorChoice, terminal: bool) -> bool {
        match choice {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto if self.get("NO_COLOR").is_some_and(|v| !v.is_empty()) => false,
            ColorChoice::Auto => terminal || self.get("GITHUB_ACTIONS").as_deref() == Some("true"),
        }
    }

    /// `name` as the shell would find it: a path with a slash as given, else the first
    /// regular file of that name in a `PATH` directory.
    pub fn find_program(&self, name: &str) -> Option<PathBuf> {
        if name.contains('/') {
            return Some(name.into());
        }
        let path = self.get("PATH")?;
        std::env::split_paths(&path)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    }

    /// Where docker's config (credentials) lives: `DOCKER_CONFIG`, else `~/.docker`.
    pub fn docker_config_dir(&self) -> Option<PathBuf> {
        match (self.get("DOCKER_CONFIG"), self.get("HOME")) {
            (Some(d), _) => Some(PathBuf::from(d)),
            (None, Some(h)) => Some(PathBuf::from(h).join(".docker")),
            (None, None) => None,
        }
    }

    /// Whether to draw a live status line on stderr: on a terminal that can take cursor
    /// controls, not in Actions (whose log is a file, shown line by line).
    pub fn status_line(&self, terminal: bool) -> bool {
        terminal
            && self.get("GITHUB_ACTIONS").as_deref() != Some("true")
            && self
                .get("TERM")
                .is_some_and(|t| !t.is_empty() && t != "dumb")
    }

    /// Every variable, for templates whose data is the whole environment.
    pub fn vars(&self) -> &BTreeMap<String, String> {
        &self.0
    }

    pub fn get(&self, key: &str) -> Option<String> {
        self.0.get(key).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_config_dir_is_docker_config_else_home() {
        let dir = |pairs: &[(&str, &str)]| Env::from_pairs(pairs).docker_config_dir();
        let both = [("DOCKER_CONFIG", "/cfg"), ("HOME", "/home/u")];
        assert_eq!(dir(&both), Some(PathBuf::from("/cfg")));
        assert_eq!(dir(&both[1..]), Some(PathBuf::from("/home/u/.docker")));
        assert_eq!(dir(&[]), None);
    }

    #[test]
    fn colour_only_where_it_renders() {
        let plain = Env::from_pairs(&[]);
        let actions = Env::from_pairs(&[("GITHUB_ACTIONS", "true")]);
        let no_color = Env::from_pairs(&[("GITHUB_ACTIONS", "true"), ("NO_COLOR", "1")]);
        let empty_no_color = Env::from_pairs(&[("NO_COLOR", "")]);
        assert!(!plain.color(ColorChoice::Auto, false));
        assert!(plain.color(ColorChoice::Auto, true));
        assert!(actions.color(ColorChoice::Auto, false));
        assert!(!no_color.color(ColorChoice::Auto, true));
        assert!(empty_no_color.color(ColorChoice::Auto, true));
        assert!(no_color.color(ColorChoice::Always, false));
        assert!(!actions.color(ColorChoice::Never, true));
    }
}
