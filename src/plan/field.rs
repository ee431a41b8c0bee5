//! What a plan error is about: a command-line option, typed so the action can name its own
//! input instead, or anything else (a variable, a config file position).

use std::fmt;

/// The command-line options the plan checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flag {
    Annotation,
    Base,
    BuildImage,
    CacheDir,
    CompressionLevel,
    DefaultRepo,
    Dlv,
    DryRun,
    Env,
    FileOutput,
    Flags,
    Image,
    Jobs,
    Label,
    Ldflags,
    Platform,
    /// `--push=false`.
    NoPush,
    PushByDigest,
    RegistryCa,
    RegistryTimeout,
    Tag,
}

impl Flag {
    pub fn as_str(self) -> &'static str {
        match self {
            Flag::Annotation => "--annotation",
            Flag::Base => "--base",
            Flag::BuildImage => "--build-image",
            Flag::CacheDir => "--cache-dir",
            Flag::CompressionLevel => "--compression-level",
            Flag::DefaultRepo => "--default-repo",
            Flag::Dlv => "--dlv",
            Flag::DryRun => "--dry-run",
            Flag::Env => "--env",
            Flag::FileOutput => "--file-output",
            Flag::Flags => "--flags",
            Flag::Image => "--image",
            Flag::Jobs => "--jobs",
            Flag::Label => "--label",
            Flag::Ldflags => "--ldflags",
            Flag::Platform => "--platform",
            Flag::NoPush => "--push=false",
            Flag::PushByDigest => "--push-by-digest",
            Flag::RegistryCa => "--registry-ca",
            Flag::RegistryTimeout => "--registry-timeout",
            Flag::Tag => "--tag",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Field {
    Flag(Flag),
    /// An environment variable, a config key or file position; empty when the reason names
    /// its own position.
    Other(String),
}

impl Field {
    pub fn is_empty(&self) -> bool {
        matches!(self, Field::Other(s) if s.is_empty())
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Field::Flag(flag) => f.write_str(flag.as_str()),
            Field::Other(s) => f.write_str(s),
        }
    }
}

impl From<Flag> for Field {
    fn from(flag: Flag) -> Field {
        Field::Flag(flag)
    }
}

impl From<&Field> for Field {
    fn from(field: &Field) -> Field {
        field.clone()
    }
}

impl From<&str> for Field {
    fn from(s: &str) -> Field {
        Field::Other(s.to_string())
    }
}

impl From<&String> for Field {
    fn from(s: &String) -> Field {
        Field::Other(s.clone())
    }
}

impl From<String> for Field {
    fn from(s: String) -> Field {
        Field::Other(s)
    }
}
