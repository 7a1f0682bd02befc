//! How a command's output prints: typed [`Row`]s, as a table or as JSON
//! with `--json`.

use anyhow::Result;
use serde::Serialize;

use crate::ctl::{table::Table, Ctx};

/// One record of a command's output: a table row, or a JSON object.
pub trait Row: Serialize {
    /// Column titles.
    const HEAD: &'static [&'static str];
    /// The cells, in [`Row::HEAD`] order.
    fn cells(&self) -> Vec<String>;
}

/// `rows` as a table.
pub fn table<R: Row>(rows: &[R]) -> String {
    let mut t = Table::new(R::HEAD);
    for r in rows {
        t.row(r.cells());
    }
    t.render()
}

impl Ctx {
    /// Prints `rows` as JSON (with `--json`) or as a table followed by `footer`.
    pub fn emit_rows<R: Row>(&self, rows: &[R], footer: impl FnOnce() -> String) -> Result<()> {
        let json = serde_json::to_value(rows)?;
        self.emit(&json, || table(rows) + &footer());
        Ok(())
    }
}
