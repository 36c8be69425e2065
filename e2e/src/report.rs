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

    /// Seconds per phase (drain, upgrade, ready, ...) summed over the nodes, in first-seen order.
    pub fn phase_totals(&self) -> Vec<(String, f64)> {
        let mut totals: Vec<(String, f64)> = vec![];
        for (name, secs) in self.steps.iter().flat_map(|n| &n.phases) {
            match totals.iter_mut().find(|(n, _)| n == name) {
                Some((_, t)) => *t += secs,
                None => totals.push((name.clone(), *secs)),
            }
        }
        totals
    }

    /// The physical floor of a rollout: per node, the engine's stop and start (`upgrade`) and
    /// its way back to Ready (`ready`), summed over the nodes; no order of work goes below it.
    pub fn floor_secs(&self) -> f64 {
        self.phase_totals()
            .iter()
            .filter(|(name, _)| name == "upgrade" || name == "ready")
            .map(|(_, secs)| secs)
            .sum()
    }

    /// The manual procedure (`self`) against the operator's rollout of the same run: both times,
    /// the ratio, per-phase sums, the floor, and each one's time above its floor.
    pub fn compared_with(&self, operator: &Figures) -> Vec<String> {
        let (Some(manual), Some(op)) = (self.rollout_secs, operator.rollout_secs) else {
            return vec!["no rollout time to compare".into()];
        };
        let phases = |f: &Figures| {
            f.phase_totals()
                .iter()
                .map(|(n, s)| format!("{n} {s:.1}s"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let (manual_floor, op_floor) = (self.floor_secs(), operator.floor_secs());
        vec![
            format!(
                "operator {op:.1}s vs manual {manual:.1}s: ratio operator/manual = {:.2} (target <= 0.80)",
                op / manual
            ),
            format!("manual phases (summed over nodes): {}", phases(self)),
            format!("operator phases (summed over nodes): {}", phases(operator)),
            format!(
                "floor (engine stop + start + Ready, summed over nodes): manual {manual_floor:.1}s, operator {op_floor:.1}s"
            ),
            format!(
                "above the floor: manual {:.1}s, operator {:.1}s (ratio {:.2})",
                manual - manual_floor,
                op - op_floor,
                (op - op_floor) / (manual - manual_floor)
            ),
            format!(
                "connectivity errors: manual {:?}, operator {:?}; tasks rejected: manual {:?}, operator {:?}",
                self.connectivity_errors,
                operator.connectivity_errors,
                self.rejected_tasks,
                operator.rejected_tasks
            ),
        ]
    }

    /// Figures another scenario wrote in the last `max_age_secs`, if any.
    pub fn load_recent(scenario: &str, max_age_secs: i64) -> Option<Figures> {
        let dir = artefacts_dir(scenario).ok()?;
        let f: Figures =
            serde_json::from_slice(&std::fs::read(dir.join("figures.json")).ok()?).ok()?;
        (jiff::Timestamp::now().as_second() - f.written <= max_age_secs).then_some(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::NodeSteps;

    fn node(host: &str, phases: &[(&str, f64)]) -> NodeSteps {
        NodeSteps {
            host: host.into(),
            phases: phases.iter().map(|(n, s)| (n.to_string(), *s)).collect(),
            total: phases.iter().map(|(_, s)| s).sum(),
        }
    }

    #[test]
    fn the_floor_is_engine_stop_start_and_ready_summed_over_nodes() {
        let mut manual = Figures::new("s6", 0.0);
        manual.rollout_secs = Some(100.0);
        manual.steps = vec![
            node("n1", &[("drain", 10.0), ("upgrade", 8.0), ("ready", 2.0)]),
            node("n2", &[("drain", 12.0), ("upgrade", 9.0), ("ready", 1.0)]),
        ];
        assert_eq!(
            manual.phase_totals(),
            [
                ("drain".to_string(), 22.0),
                ("upgrade".to_string(), 17.0),
                ("ready".to_string(), 3.0)
            ]
        );
        assert_eq!(manual.floor_secs(), 20.0);
        let mut operator = manual.clone();
        operator.rollout_secs = Some(60.0);
        let lines = manual.compared_with(&operator);
        assert!(
            lines[0].contains("ratio operator/manual = 0.60"),
            "{lines:?}"
        );
        assert!(
            lines[4].contains("manual 80.0s, operator 40.0s (ratio 0.50)"),
            "{lines:?}"
        );
    }
}
