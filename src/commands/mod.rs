//! One file per command; [`dispatch`] picks the command.

use anyhow::Result;

use crate::ExitStatus;
use crate::cli::{Cli, Command};
use crate::printer::Printer;

pub async fn dispatch(cli: Cli, printer: Printer) -> Result<ExitStatus> {
    let _ = printer;
    match cli.command {
        _ => Ok(ExitStatus::Success),
    }
}
