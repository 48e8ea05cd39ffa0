//! Measuring one case: [`Context::compare`] alternates barsync and its anchor for the
//! configured number of rounds and turns the runs into a [`Row`]; [`Context::copy_side`] and
//! [`Context::rsync_side`] build the usual `barsync copy` and `rsync` sides over SSH.

use std::path::Path;
use std::process::Command;

use super::{Context, Side};
use crate::harness::report::{Row, SideStats};
use crate::harness::runner::{self, barsync_wire_bytes, measure, rsync_wire_bytes, Measurement};
use crate::harness::Result;

impl<'a> Context<'a> {
    /// `runs` rounds; in each, both sides run once, barsync first in even rounds and the
    /// anchor first in odd ones. Each run is preceded by its side's setup and a `sync`.
    pub(super) fn compare<'s>(
        &self,
        id: &str,
        title: &str,
        mut barsync: Side<'s>,
        mut anchor: Side<'s>,
    ) -> Result<Row> {
        let mut results: [(Vec<Measurement>, Vec<Option<u64>>, String); 2] = Default::default();
        for round in 0..self.options.runs {
            let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            for index in order {
                let side = if index == 0 {
                    &mut barsync
                } else {
                    &mut anchor
                };
                (side.setup)()?;
                // SAFETY: sync(2) takes no arguments and cannot fail.
                unsafe { libc::sync() };
                let (run, command) = (side.run)()?;
                (self.progress)(&format!(
                    "   {id} {} run {}/{}: {:.2} s",
                    side.tool,
                    round + 1,
                    self.options.runs,
                    run.seconds
                ));
                let wire = (side.wire)(&run.stdout);
                let slot = &mut results[index];
                slot.1.push(wire);
                slot.0.push(run);
                slot.2 = command;
            }
        }
        let [b, a] = results;
        let barsync = SideStats::from_runs(&barsync.tool, &b.2, &b.0, &b.1);
        let anchor = SideStats::from_runs(&anchor.tool, &a.2, &a.0, &a.1);
        let row = Row::new(id, title, barsync, anchor);
        (self.progress)(&format!(
            "   {id}: barsync {:.2} s, {} {:.2} s, ratio {:.2}x",
            row.barsync.median_seconds, row.anchor.tool, row.anchor.median_seconds, row.ratio
        ));
        Ok(row)
    }

    /// `barsync copy [flags] HOST:REMOTE/source target` through `ssh`.
    pub(super) fn copy_side<'s>(
        &'s self,
        ssh: &'s str,
        flags: &'s [&'s str],
        source: &'s str,
        target: &'s Path,
        setup: Box<dyn FnMut() -> Result<()> + 's>,
    ) -> Side<'s> {
        let tool = if flags.is_empty() {
            "barsync copy".to_owned()
        } else {
            format!("barsync copy {}", flags.join(" "))
        };
        Side {
            tool,
            setup,
            run: Box::new(move || {
                let mut command = Command::new(&self.options.barsync);
                command
                    .arg("copy")
                    .args(["--remote-barsync", &self.remote_barsync, "-e", ssh])
                    .args(flags)
                    .arg(self.remote_spec(source))
                    .arg(target);
                let what = runner::describe(&command);
                Ok((measure(&mut command)?, what))
            }),
            wire: barsync_wire_bytes,
        }
    }

    /// `rsync [flags] --stats -e ssh HOST:REMOTE/source target`.
    pub(super) fn rsync_side<'s>(
        &'s self,
        ssh: &'s str,
        tool: &str,
        flags: &'s [&'s str],
        source: &'s str,
        target: &'s Path,
        setup: Box<dyn FnMut() -> Result<()> + 's>,
    ) -> Side<'s> {
        Side {
            tool: tool.to_owned(),
            setup,
            run: Box::new(move || {
                let mut command = Command::new("rsync");
                command
                    .args(flags)
                    .args(["--stats", "-e", ssh])
                    .arg(self.remote_spec(source))
                    .arg(target);
                let what = runner::describe(&command);
                Ok((measure(&mut command)?, what))
            }),
            wire: rsync_wire_bytes,
        }
    }
}
