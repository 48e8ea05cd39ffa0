//! Measuring one case: [`Context::compare`] alternates barsync and its anchor for the
//! configured number of rounds and turns the runs into a [`Row`] ([`Context::compare_with`]:
//! several anchors and floors in the same rounds); [`Context::copy_side`] and
//! [`Context::rsync_side`] build the usual `barsync copy` and `rsync` sides over SSH.

use std::path::Path;
use std::process::Command;

use super::{Context, Side};
use crate::harness::report::{Floor, Row, SideStats};
use crate::harness::runner::{self, barsync_wire_bytes, measure, rsync_wire_bytes, Measurement};
use crate::harness::Result;

/// What [`Context::compare_with`] measured: one row per anchor (all sharing barsync's runs),
/// and each floor beside the first row.
pub(super) struct Compared {
    pub rows: Vec<Row>,
    pub floors: Vec<Floor>,
}

impl<'a> Context<'a> {
    /// [`Context::compare_with`] of barsync and one anchor: its one row.
    pub(super) fn compare<'s>(
        &self,
        id: &str,
        title: &str,
        barsync: Side<'s>,
        anchor: Side<'s>,
    ) -> Result<Row> {
        let mut compared =
            self.compare_with(id, title, barsync, vec![(id.to_owned(), anchor)], vec![])?;
        Ok(compared.rows.remove(0))
    }

    /// `runs` rounds; in each, every side runs once (barsync, the anchors, then the floors), in
    /// that order in even rounds and the reverse in odd ones. Each run is preceded by its
    /// side's setup and a `sync`. Each anchor gives a row under its own id (the same barsync
    /// runs in each); each floor, given with its id, is set beside the first row.
    pub(super) fn compare_with<'s>(
        &self,
        id: &str,
        title: &str,
        barsync: Side<'s>,
        anchors: Vec<(String, Side<'s>)>,
        floors: Vec<(String, Side<'s>)>,
    ) -> Result<Compared> {
        let anchor_count = anchors.len();
        let mut ids = vec![id.to_owned()];
        let mut sides = vec![barsync];
        for (side_id, side) in anchors.into_iter().chain(floors) {
            ids.push(side_id);
            sides.push(side);
        }
        let mut results: Vec<(Vec<Measurement>, Vec<Option<u64>>, String)> =
            vec![Default::default(); sides.len()];
        for round in 0..self.options.runs {
            let mut order: Vec<usize> = (0..sides.len()).collect();
            if round % 2 == 1 {
                order.reverse();
            }
            for index in order {
                let side = &mut sides[index];
                (side.setup)()?;
                // SAFETY: sync(2) takes no arguments and cannot fail.
                unsafe { libc::sync() };
                let (run, command) = (side.run)()?;
                (self.progress)(&format!(
                    "   {} {} run {}/{}: {:.2} s",
                    ids[index],
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
        let stats: Vec<SideStats> = sides
            .iter()
            .zip(&results)
            .map(|(side, (runs, wire, command))| {
                SideStats::from_runs(&side.tool, command, runs, wire)
            })
            .collect();
        let rows: Vec<Row> = (1..=anchor_count)
            .map(|index| Row::new(&ids[index], title, stats[0].clone(), stats[index].clone()))
            .collect();
        for row in &rows {
            (self.progress)(&format!(
                "   {}: barsync {:.2} s, {} {:.2} s, ratio {:.2}x",
                row.id,
                row.barsync.median_seconds,
                row.anchor.tool,
                row.anchor.median_seconds,
                row.ratio
            ));
        }
        let floors: Vec<Floor> = (anchor_count + 1..sides.len())
            .map(|index| Floor::new(&ids[index], stats[index].clone(), &rows[0]))
            .collect();
        for floor in &floors {
            (self.progress)(&format!(
                "   {}: {} {:.2} s, barsync {:.2}x of it",
                floor.id, floor.floor.tool, floor.floor.median_seconds, floor.times_floor
            ));
        }
        Ok(Compared { rows, floors })
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
