//! Per-scenario figures: printed at the end of each scenario and kept as JSON in
//! `target/<profile>/e2e/<scenario>/figures.json` so a later scenario can compare (the manual
//! baseline prints its ratio to the operator's rollout).

use crate::cluster::Connectivity;
use crate::lab::artefacts_dir;
use anyhow::Result;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Figures {
    pub scenario: String,
    /// `lab-up` (bundles cached, network, engines, images, swarm).
    pub setup_secs: f64,
    /// First step to last (operator: first event to `completed`/`paused`; manual: script).
    pub rollout_secs: Option<f64>,
    /// Per node: [(phase, seconds)] and the node's total.
    pub steps: Vec<crate::operator::NodeSteps>,
    pub connectivity_errors: Option<usize>,
    pub startup_errors: Option<usize>,
    pub shutdown_errors: Option<usize>,
    pub client_starts: Option<usize>,
    pub client_stops: Option<usize>,
    pub rejected_tasks: Option<usize>,
    pub failed_tasks: Option<usize>,
    pub notes: Vec<String>,
    /// Unix time the figures were written.
    pub written: i64,
}

impl Figures {
    pub fn new(scenario: &str, setup_secs: f64) -> Self {
        Figures {
            scenario: scenario.to_string(),
            setup_secs,
            ..Default::default()
        }
    }

    pub fn connectivity(&mut self, c: &Connectivity) {
        self.connectivity_errors = Some(c.errors);
        self.startup_errors = Some(c.startup_errors);
        self.shutdown_errors = Some(c.shutdown_errors);
        self.client_starts = Some(c.client_starts);
        self.client_stops = Some(c.client_stops);
    }

    /// Print the figures and keep them as JSON.
    pub fn report(&mut self) -> Result<()> {
        self.written = jiff::Timestamp::now().as_second();
        let s = &self.scenario;
        let mut out = format!("\n==== e2e figures: {s} ====\n");
        out.push_str(&format!(
            "  lab setup            {:7.1} s\n",
            self.setup_secs
        ));
        if let Some(r) = self.rollout_secs {
            out.push_str(&format!("  rollout              {r:7.1} s\n"));
        }
        for crate::operator::NodeSteps {
            host,
            phases,
            total,
        } in &self.steps
        {
            let p: Vec<String> = phases.iter().map(|(n, v)| format!("{n} {v:.1}s")).collect();
            out.push_str(&format!("  {host:3} {total:6.1} s  {}\n", p.join(", ")));
        }
        if let Some(e) = self.connectivity_errors {
            out.push_str(&format!(
                "  connectivity errors  {e} (in a client's own start-up {} / shutdown {}; client starts {}, stops {})\n",
                self.startup_errors.unwrap_or(0),
                self.shutdown_errors.unwrap_or(0),
                self.client_starts.unwrap_or(0),
                self.client_stops.unwrap_or(0)
            ));
        }
        if let Some(r) = self.rejected_tasks {
            out.push_str(&format!(
                "  tasks rejected       {r}, failed {}\n",
                self.failed_tasks.unwrap_or(0)
            ));
        }
        for n in &self.notes {
            out.push_str(&format!("  note: {n}\n"));
        }
        // Written to the process's stderr directly, not with eprint!, which libtest captures and
        // shows only on failure: the suite prints its figures on every run.
        let _ = std::io::Write::write_all(&mut std::io::stderr(), out.as_bytes());
        let dir = artefacts_dir(s)?;
        std::fs::write(dir.join("figures.json"), serde_json::to_vec_pretty(self)?)?;
        std::fs::write(dir.join("figures.txt"), out)?;
        Ok(())
    }

    /// Figures another scenario wrote in the last `max_age_secs`, if any.
    pub fn load_recent(scenario: &str, max_age_secs: i64) -> Option<Figures> {
        let dir = artefacts_dir(scenario).ok()?;
        let f: Figures =
            serde_json::from_slice(&std::fs::read(dir.join("figures.json")).ok()?).ok()?;
        (jiff::Timestamp::now().as_second() - f.written <= max_age_secs).then_some(f)
    }
}
