use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use clap::Parser;
use kobuild::cli::{Cli, Command};
use kobuild::gha::commands::Stderr;
use kobuild::plan::{Env, Plan};

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = kobuild::cli::refuse_skaffold_only_flags(&argv) {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    let level = match cli.verbose {
        0 => tracing::Level::INFO,
        1 => tracing::Level::DEBUG,
        _ => tracing::Level::TRACE,
    };
    let env = Env::from_process();
    tracing_subscriber::fmt()
        .with_writer(|| Stderr)
        .with_ansi(env.color(cli.color, std::io::stderr().is_terminal()))
        .with_max_level(level)
        .with_target(false)
        .without_time()
        .init();
    // Not for the action step, whose stdout carries workflow commands.
    if !matches!(cli.command, Command::Action) && env.status_line(std::io::stderr().is_terminal()) {
        kobuild::progress::enable(kobuild::progress::terminal_width().unwrap_or(80));
    }
    if let Err(e) = kobuild::interrupt::install() {
        eprintln!("error: cannot handle SIGINT/SIGTERM: {e}");
        return ExitCode::FAILURE;
    }
    if let Some(secs) = cli.timeout
        && let Err(e) = kobuild::interrupt::limit(std::time::Duration::from_secs(secs))
    {
        eprintln!("error: cannot keep --timeout: {e}");
        return ExitCode::FAILURE;
    }
    let result = run(cli, env);
    kobuild::progress::finish();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Through `Stderr`: a user value in the message must not start a workflow command.
            // One write, so that `defuse` sees whole lines.
            let _ = Stderr.write_all(format!("error: {e}\n").as_bytes());
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

/// A bad value is one line naming the flag, with the value quoted as every other error quotes
/// it; clap's other errors print as clap words them. All go through `Stderr`: a value holding
/// a newline must not start a workflow command.
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    let context = |kind| match e.get(kind) {
        Some(ContextValue::String(s)) => Some(s.as_str()),
        _ => None,
    };
    let arg = context(ContextKind::InvalidArg);
    let value = context(ContextKind::InvalidValue);
    let reason = match (e.kind(), e.get(ContextKind::ValidValue)) {
        (ErrorKind::InvalidValue, Some(ContextValue::Strings(valid))) => {
            Some(format!("give one of {}", valid.join(", ")))
        }
        (ErrorKind::ValueValidation, _) => std::error::Error::source(&e).map(|r| r.to_string()),
        _ => None,
    };
    match (arg, value, reason) {
        (Some(arg), Some(value), Some(reason)) => {
            // "--jobs <N>": the flag as written, without its value's name.
            let flag = arg.split(' ').next().unwrap_or(arg);
            let _ = Stderr.write_all(
                format!("error: {flag}: invalid value {value:?}: {reason}\n").as_bytes(),
            );
        }
        _ if !e.use_stderr() => {
            let _ = e.print();
        }
        _ => {
            let _ = Stderr.write_all(e.render().to_string().as_bytes());
        }
    }
    ExitCode::from(e.exit_code() as u8)
}

fn run(cli: Cli, env: Env) -> Result<(), kobuild::Error> {
    let cwd = std::env::current_dir()
        .map_err(|e| kobuild::Error::Config(format!("current directory: {e}")))?;
    let runtime = tokio::runtime::Runtime::new()
        .map_err(|e| kobuild::Error::Internal(format!("tokio runtime: {e}")))?;
    match cli.command {
        Command::Build(args) => {
            let plan = Plan::new(&args, &env, cwd)?;
            let artifacts = if plan.dry_run {
                kobuild::pipeline::dry_run(&plan)?
            } else {
                let reports = runtime.block_on(kobuild::pipeline::build(&plan))?;
                reports.iter().map(|r| r.artifact()).collect()
            };
            // Results may go to the same terminal as the status line.
            kobuild::progress::finish();
            let mut out = std::io::stdout().lock();
            // A closed stdout (e.g. `| head`) is not a build failure.
            match (&plan.output_template, plan.quiet) {
                (Some(template), true) => {
                    let _ = write!(
                        out,
                        "{}",
                        kobuild::report::render_output(template, &artifacts)?
                    );
                }
                _ => {
                    for a in artifacts {
                        let _ = writeln!(out, "{}", a.tag);
                    }
                }
            }
            Ok(())
        }
        Command::Render(args) => Ok(kobuild::render::run(&args, &env, &cwd)?),
        Command::Deps(args) => {
            let lines = kobuild::deps::run(&args, &env, &cwd)?;
            let mut out = std::io::stdout().lock();
            for l in lines {
                let _ = writeln!(out, "{l}");
            }
            Ok(())
        }
        Command::Init(args) => {
            let written = kobuild::init::run(&cwd, &kobuild::plan::go_command(&env)?, args.force)?;
            let _ = writeln!(std::io::stdout().lock(), "{}", written.display());
            Ok(())
        }
        Command::Resolve(args) => {
            let stdin = &mut std::io::stdin().lock();
            let rendered = runtime.block_on(kobuild::resolve::run(&args, &env, cwd, stdin))?;
            kobuild::progress::finish();
            // A closed stdout (e.g. `| head`) is not a build failure.
            let _ = std::io::stdout().lock().write_all(rendered.as_bytes());
            Ok(())
        }
        Command::Action => runtime
            .block_on(kobuild::gha::run(&env, cwd, std::io::stdout()))
            .map(drop),
        Command::Plan(args) => {
            let plan = kobuild::plan::Plan::new(&args.build, &env, cwd)?;
            let matrix = kobuild::plan::matrix::matrix(&plan)?;
            let json = serde_json::to_string(&matrix)
                .map_err(|e| kobuild::error::Error::Internal(e.to_string()))?;
            let _ = writeln!(std::io::stdout().lock(), "{json}");
            Ok(())
        }
        Command::Merge(args) => {
            let merged = runtime.block_on(kobuild::merge::run(&args, &env, &cwd))?;
            kobuild::progress::finish();
            let mut out = std::io::stdout().lock();
            for a in merged {
                let _ = writeln!(out, "{}", a.tag);
            }
            Ok(())
        }
    }
}
