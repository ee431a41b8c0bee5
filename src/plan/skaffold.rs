//! skaffold.yaml's ko artifacts → artifact plans, as Skaffold's ko builder would build them:
//! `.ko.yaml` precedence, default-repo naming, the tag policy, and Skaffold's templates for
//! env, flags, ldflags and labels (ko's templates again for flags and ldflags).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::tags::{self, DepList, TagContext};
use super::{
    ArtifactPlan, Common, DEFAULT_BASE, Destination, Env, Field, Flag, PlanError, err,
    go_env_entry, ko_data, ko_default, located, platforms, refuse_toolexec,
};
use crate::base::BaseSpec;
use crate::cli::BuildArgs;
use crate::config::{
    ActivationContext, Builder, KoBuild, KoConfig, Origin, Values, effective_ko_build,
    image_template_vars, load_skaffold, registry_repository, sanitize_image_name,
};
use crate::registry::Repository;
use crate::template;

/// The ko artifacts of `file` in file order, and how many to build at once (0: all).
pub(super) fn artifacts(
    args: &BuildArgs,
    env: &Env,
    cwd: &Path,
    file: &Path,
    go: &str,
    common: &Common,
    warnings: &mut Vec<String>,
) -> Result<(Vec<ArtifactPlan>, usize), PlanError> {
    let activation = ActivationContext {
        env,
        command: "build",
        kube_context: None,
    };
    let config =
        load_skaffold(file, &args.skaffold.profile.profiles, Some(&activation)).map_err(located)?;
    warnings.extend(config.warnings.iter().cloned());
    let config_dir = file
        .parent()
        .map_or_else(|| cwd.to_path_buf(), Path::to_path_buf);
    let env_map = env.vars();
    let mut plans = Vec::new();
    // `-b`: Skaffold keeps the artifacts whose image name, as written, contains a value.
    let selected = |image: &str| {
        args.build_images.is_empty() || args.build_images.iter().any(|b| image.contains(b.as_str()))
    };
    for artifact in config.artifacts.iter().filter(|a| selected(&a.image)) {
        let where_ = format!(
            "{}:{}:{}",
            artifact.file.display(),
            artifact.position.line,
            artifact.position.column
        );
        let ko = match &artifact.builder {
            Builder::Ko(ko) => ko,
            Builder::Other(kind) => {
                warnings.push(format!(
                    "{where_}: skipping {}: kobuild builds ko artifacts, not {kind}",
                    artifact.image
                ));
                continue;
            }
        };
        let deps = dependency_lists(&config, artifact, warnings);
        let mut artifact = artifact.clone();
        artifact.context = config_dir.join(&artifact.context).display().to_string();
        let work_dir = crate::config::working_dir(&artifact, ko);
        let ko_config_path = env.get("KO_CONFIG_PATH").map(|p| cwd.join(p));
        let ko_config =
            KoConfig::load(&work_dir, ko_config_path.as_deref(), env).map_err(located)?;
        warnings.extend(ko_config.warnings.iter().cloned());
        let effective = effective_ko_build(
            &artifact,
            ko,
            config.platforms(&artifact),
            &ko_config,
            |dir, pattern| go_list(go, dir, pattern),
        )
        .map_err(|e| err(&where_, e))?;
        warnings.extend(effective.warnings.iter().cloned());

        let pipeline = &config.pipelines[artifact.pipeline];
        let context = PathBuf::from(&artifact.context);
        // `-t` replaces the tag policy, as in Skaffold: only the given tags are pushed.
        let tag_list = if common.tags.is_empty() {
            let policy_tag = tags::tag(
                &pipeline.tag_policy,
                &TagContext {
                    dir: &context,
                    image: &artifact.image,
                    root: &config_dir,
                    deps: &deps,
                    env: env_map,
                    now: now(common),
                },
            )
            .map_err(|e| err(format!("{}: tagPolicy", file.display()), e))?;
            // Skaffold falls back to `latest` when a tagger's template misses a variable.
            if policy_tag.contains(template::NO_VALUE) {
                warnings.push(format!(
                    "{where_}: the tag policy of {} gave {policy_tag:?}, an environment \
                     variable is missing: tagging latest, as Skaffold does",
                    artifact.image
                ));
                vec!["latest".to_string()]
            } else {
                vec![policy_tag]
            }
        } else {
            common.tags.clone()
        };

        let multi_level = args.multi_level_repo;
        let (name, destination) =
            match registry_repository(&artifact.image, common.default_repo.as_deref(), multi_level)
            {
                Ok(name) if common.push => {
                    let repo = Repository::parse(&name).map_err(|e| err(&where_, e))?;
                    (name, Destination::Repository(repo))
                }
                Ok(name) => (name, Destination::None),
                Err(_) if !common.push => (sanitize_image_name(&artifact.image), Destination::None),
                Err(e) => return Err(err(&where_, e)),
            };
        let image_vars =
            image_template_vars(&format!("{name}:{}", tag_list[0])).map_err(|e| err(&where_, e))?;
        let entry = effective.ko_build.map(|i| &ko_config.builds[i]);
        let capabilities = match entry {
            Some(b) => {
                let file = ko_config
                    .file
                    .as_deref()
                    .map_or_else(|| ".ko.yaml".into(), |f| f.display().to_string());
                super::capabilities(
                    &format!("{file}:{}:{}", b.position.line, b.position.column),
                    b,
                )?
            }
            None => None,
        };
        let source = |field: &str, v: &Values| source(&where_, field, v, &ko_config, entry, env);
        let skaffold = |field: &str, v: &Values| -> Result<Vec<String>, PlanError> {
            v.values
                .iter()
                .map(|s| match v.origin {
                    Origin::Skaffold => template::skaffold_expand(s, env_map, &image_vars),
                    Origin::KoYaml => Ok(s.clone()),
                })
                .collect::<Result<_, _>>()
                .map_err(|e| err(field, e))
        };
        let mut go_env = Vec::new();
        let env_field = source("env", &effective.env);
        for kv in skaffold(&env_field, &effective.env)? {
            go_env.push(go_env_entry(&env_field, &kv)?);
        }
        go_env.extend(common.env.iter().cloned());
        // ko templates flags and ldflags again, whichever file they came from.
        let data = ko_data(
            &effective.working_dir,
            env,
            &go_env,
            common.source_date_epoch,
        )?;
        let ko_again = |field: Field, values: Vec<String>| -> Result<Vec<String>, PlanError> {
            let expanded = values
                .iter()
                .map(|v| data.expand(v).map_err(|e| err(&field, e)))
                .collect::<Result<Vec<_>, _>>()?;
            refuse_toolexec(&field, &expanded)?;
            Ok(expanded)
        };
        // Flags on the command line replace the configured ones, which are then not used.
        let flags = if args.opts.flags.is_empty() {
            let field = source("flags", &effective.flags);
            ko_again(field.clone().into(), skaffold(&field, &effective.flags)?)?
        } else {
            refuse_toolexec(Flag::Flags, &args.opts.flags)?;
            args.opts.flags.clone()
        };
        let ldflags = if args.opts.ldflags.is_empty() {
            let field = source("ldflags", &effective.ldflags);
            ko_again(field.clone().into(), skaffold(&field, &effective.ldflags)?)?
        } else {
            ko_again(Flag::Ldflags.into(), args.opts.ldflags.clone())?
        };
        let mut labels = BTreeMap::new();
        for (k, v) in &ko.labels {
            super::check_key(format!("{where_}: ko.labels"), k)?;
            let v = template::skaffold_expand_label(v, env_map)
                .map_err(|e| err(format!("{where_}: ko.labels.{k}"), e))?;
            labels.insert(k.clone(), v);
        }
        labels.extend(common.labels.iter().map(|(k, v)| (k.clone(), v.clone())));

        let base_input = args.opts.base.clone().unwrap_or_else(|| {
            if effective.base_image.is_empty() {
                DEFAULT_BASE.to_string()
            } else {
                effective.base_image.clone()
            }
        });
        let base =
            BaseSpec::parse(&base_input).map_err(|e| err(format!("{where_}: ko.fromImage"), e))?;
        let platform_field: Vec<String> = if args.opts.platforms.is_empty() {
            effective.platforms.clone()
        } else {
            Vec::new()
        };
        // Where the configured platforms were written, as `effective_ko_build` chose them.
        let platform_source = if !artifact.platforms.is_empty() {
            format!("{where_}: platforms")
        } else if !config.platforms(&artifact).is_empty() {
            format!("{}: build.platforms", artifact.file.display())
        } else {
            ko_default(&ko_config, env, "defaultPlatforms")
        };
        let platforms = platforms(&args.opts.platforms, &platform_field, &platform_source, env)
            .map_err(|e| match e.field {
                Field::Flag(Flag::Platform) => err(&where_, e),
                _ => e,
            })?;
        plans.push(ArtifactPlan {
            image_name: Some(artifact.image.clone()),
            target: format!("ko://{}", effective.import_path),
            dir: effective.working_dir.clone(),
            destination,
            base,
            base_overrides: BTreeMap::new(),
            platforms,
            go_env,
            flags,
            ldflags,
            labels,
            annotations: common.annotations.clone(),
            tagged_name: Some(format!("{name}:{}", tag_list[0])),
            tags: tag_list,
            capabilities,
        });
    }
    // `-b` that matches nothing builds nothing, as in Skaffold.
    if plans.is_empty() && args.build_images.is_empty() {
        return Err(err(
            file.display().to_string(),
            "has no ko artifacts: add `ko: {}` to an artifact under build.artifacts",
        ));
    }
    Ok((plans, config.concurrency as usize))
}

/// Where an artifact's `field` (env, flags, ldflags) came from, for messages: the artifact
/// in skaffold.yaml, the `.ko.yaml` `builds` entry, or a `.ko.yaml` default key.
fn source(
    where_: &str,
    field: &str,
    v: &Values,
    ko: &KoConfig,
    entry: Option<&KoBuild>,
    env: &Env,
) -> String {
    let from_entry = entry.filter(|b| {
        let values = match field {
            "env" => &b.env,
            "flags" => &b.flags,
            _ => &b.ldflags,
        };
        !values.is_empty()
    });
    match (v.origin, from_entry) {
        (Origin::Skaffold, _) => format!("{where_}: ko.{field}"),
        (Origin::KoYaml, Some(b)) => format!(
            "{}:{}:{}: {field}",
            ko.file
                .as_deref()
                .map_or_else(|| ".ko.yaml".into(), |f| f.display().to_string()),
            b.position.line,
            b.position.column
        ),
        (Origin::KoYaml, None) => {
            let key = match field {
                "env" => "defaultEnv",
                "flags" => "defaultFlags",
                _ => "defaultLdflags",
            };
            ko_default(ko, env, key)
        }
    }
}

fn now(common: &Common) -> i64 {
    common.source_date_epoch.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64)
    })
}

/// `go list` in `dir`: the import path of the one package `pattern` names.
pub(super) fn go_list(go: &str, dir: &Path, pattern: &str) -> Result<String, String> {
    if let Some(path) = import_path_from_go_mod(dir, pattern) {
        return Ok(path);
    }
    let out = Command::new(go)
        .args(["list", "-f", "{{.ImportPath}}", "--", pattern])
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {go}: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().filter(|l| !l.is_empty()).collect();
    match (out.status.success(), lines.as_slice()) {
        (true, [one]) => Ok(one.to_string()),
        (true, many) => Err(format!(
            "{pattern} in {} matches {} packages, not one",
            dir.display(),
            many.len()
        )),
        (false, _) => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            Err(format!(
                "go list {pattern} in {}: {}",
                dir.display(),
                stderr.lines().last().unwrap_or("failed").trim()
            ))
        }
    }
}

/// The import path `go list` would give for a plain directory pattern (`.`, `./cmd/app`)
/// in a module, read from the nearest go.mod: its `module` path joined with the directory's
/// path below it. A monorepo's skaffold.yaml names dozens of packages, and a `go list` each
/// costs tens of milliseconds. Anything else (`...`, a file, no go.mod, a directory without
/// a non-test Go file) is left to `go list`, which also words the errors.
fn import_path_from_go_mod(dir: &Path, pattern: &str) -> Option<String> {
    if pattern != "." && !pattern.starts_with("./") || pattern.contains("...") {
        return None;
    }
    let target = dir.join(pattern).canonicalize().ok()?;
    let has_go = std::fs::read_dir(&target).ok()?.flatten().any(|e| {
        let name = e.file_name();
        let name = name.to_string_lossy();
        name.ends_with(".go") && !name.ends_with("_test.go") && e.path().is_file()
    });
    if !has_go {
        return None;
    }
    let root = target.ancestors().find(|d| d.join("go.mod").is_file())?;
    let module = module_path(&std::fs::read_to_string(root.join("go.mod")).ok()?)?;
    let below = target.strip_prefix(root).ok()?;
    let mut path = module;
    for part in below.components() {
        path.push('/');
        path.push_str(part.as_os_str().to_str()?);
    }
    Some(path)
}

/// The `module` directive of a go.mod (quoted or not, comments dropped).
fn module_path(go_mod: &str) -> Option<String> {
    go_mod.lines().find_map(|line| {
        let line = line.split("//").next().unwrap_or("").trim();
        let rest = line.strip_prefix("module")?;
        if !rest.starts_with([' ', '\t', '"']) {
            return None;
        }
        let path = rest.trim().trim_matches('"');
        (!path.is_empty()).then(|| path.to_string())
    })
}

/// The dependency patterns inputDigest hashes for `artifact`: its own, then those of the
/// artifacts it `requires`, transitively, each once. A required artifact that is not a ko
/// artifact of this file has patterns kobuild cannot know: a warning says the tag differs.
fn dependency_lists(
    config: &crate::config::SkaffoldConfig,
    artifact: &crate::config::Artifact,
    warnings: &mut Vec<String>,
) -> Vec<DepList> {
    let mut lists: Vec<DepList> = Vec::new();
    let mut seen: Vec<&str> = vec![artifact.image.as_str()];
    let mut queue = vec![artifact];
    while let Some(a) = queue.pop() {
        if let Builder::Ko(ko) = &a.builder {
            let (paths, ignore) = ko.dependency_patterns();
            lists.push(DepList {
                context: a.context.clone(),
                paths,
                ignore,
            });
        }
        for r in &a.requires {
            if seen.contains(&r.image.as_str()) {
                continue;
            }
            seen.push(&r.image);
            match config.artifacts.iter().find(|b| b.image == r.image) {
                Some(b) if matches!(b.builder, Builder::Ko(_)) => queue.push(b),
                _ => warnings.push(format!(
                    "{}:{}:{}: requires {:?}, which is not a ko artifact of this file: an inputDigest tag leaves its files out",
                    a.file.display(),
                    a.position.line,
                    a.position.column,
                    r.image
                )),
            }
        }
    }
    lists
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn import_paths_come_from_go_mod_as_go_list_gives_them() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let write = |f: &str, text: &str| {
            let p = root.join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        write(
            "go.mod",
            "// a comment\nmodule \"example.com/mono\" // trailing\n\ngo 1.22\n",
        );
        write("main.go", "package main\n");
        write("cmd/api/main.go", "package main\n");
        write("cmd/tests/x_test.go", "package tests\n");
        write("lib/go.mod", "module example.com/lib\n");
        write("lib/sub/a.go", "package sub\n");
        let go = |dir: &Path, pattern: &str| go_list("go", dir, pattern).unwrap();
        for (dir, pattern) in [
            (root, "."),
            (root, "./cmd/api"),
            (&root.join("lib"), "./sub"),
        ] {
            let listed = Command::new("go")
                .args(["list", "-f", "{{.ImportPath}}", "--", pattern])
                .current_dir(dir)
                .env("GOFLAGS", "-mod=mod")
                .output()
                .unwrap();
            let listed = String::from_utf8(listed.stdout).unwrap();
            assert_eq!(go(dir, pattern), listed.trim(), "{pattern}");
        }
        assert_eq!(go(root, "./cmd/api"), "example.com/mono/cmd/api");
        // Left to go list: patterns, test-only directories, files.
        assert_eq!(import_path_from_go_mod(root, "./..."), None);
        assert_eq!(import_path_from_go_mod(root, "./cmd/tests"), None);
        assert_eq!(import_path_from_go_mod(root, "./main.go"), None);
        assert_eq!(module_path("modulex foo\n"), None);
    }
}
