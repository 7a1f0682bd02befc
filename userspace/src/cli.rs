//! What `veerd` and `veerctl` share as programs: log setup (text or JSON
//! lines), and generating shell completions and man pages from their clap
//! definitions (`generate` subcommand, used by `cargo xtask install`).

use std::io::Write;

use clap::{Command, ValueEnum};

/// How logs are written to stderr.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (colour on a terminal).
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Installs the global tracing subscriber: `RUST_LOG` filters (default `info`).
pub fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init(),
        LogFormat::Json => builder.json().with_current_span(false).init(),
    }
}

/// What `generate` writes.
#[derive(Clone, Debug, clap::Subcommand)]
pub enum Generate {
    /// Shell completions, to stdout.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// The man page (roff), to stdout; or, with DIR, every page into DIR:
    /// NAME.1 and one NAME-SUBCOMMAND.1 per subcommand, which NAME.1 refers to.
    Man {
        /// Directory to write the pages into.
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
    },
}

/// Writes what `what` asks for, for the program `cmd`.
pub fn generate(mut cmd: Command, what: &Generate) -> std::io::Result<()> {
    let name = cmd.get_name().to_string();
    match what {
        Generate::Completions { shell } => {
            clap_complete::generate(*shell, &mut cmd, name, &mut std::io::stdout());
            Ok(())
        }
        Generate::Man { dir } => match dir {
            Some(d) => {
                std::fs::create_dir_all(d)?;
                clap_mangen::generate_to(cmd, d)
            }
            None => {
                let mut page = Vec::new();
                clap_mangen::Man::new(cmd).render(&mut page)?;
                std::io::stdout().write_all(&page)
            }
        },
    }
}
