//! W6: the W2 and W3 cases again, through the userspace shaping proxy (delay and rate of
//! the configured link) in front of the loopback sshd.

use super::{size_label, ssh_command_for, Context, Outcome};
use crate::harness::proxy::ShapingProxy;
use crate::harness::{HarnessError, Result};

impl<'a> Context<'a> {
    pub(super) fn w6(&mut self) -> Result<Outcome> {
        if self.sshd.is_none() {
            return Ok(Outcome::Skipped(
                "needs the loopback sshd (the shaping proxy forwards to it); not run against a remote host".into(),
            ));
        }
        self.ensure_w2()?;
        self.ensure_w3()?;
        let sshd = self.sshd.as_ref().expect("loopback sshd");
        let upstream = format!("127.0.0.1:{}", sshd.port())
            .parse()
            .map_err(|_| HarnessError::Invalid("sshd address".into()))?;
        let proxy = ShapingProxy::start(upstream, self.options.link)
            .map_err(HarnessError::io("starting the shaping proxy"))?;
        let known_hosts = sshd
            .known_hosts_via(proxy.port())
            .map_err(HarnessError::io("known_hosts"))?;
        let ssh = ssh_command_for(sshd, proxy.port(), &known_hosts);
        let shape = self.options.link;
        let link = format!(
            "{} ms RTT, {:.0} Mbit/s",
            shape.one_way_delay.as_millis() * 2,
            shape.rate_bytes_per_second as f64 * 8.0 / 1e6
        );
        let size = size_label(self.options.size_mib);
        let w2 = self.w2_case(
            &ssh,
            "W6-W2",
            &format!("{size} file, 1% rewritten, {link}"),
            &[],
            "rsync -a",
            &["-a"],
        )?;
        let mut w3 = self.w3_case(&ssh, "W6-W3")?;
        w3.workload = format!("{}, {link}", w3.workload);
        drop(proxy);
        Ok(Outcome::Rows(vec![w2, w3]))
    }
}
