//! Stack fixtures: the manual upgrade procedure's test stack and its `exhaust_addrs` stack.

use crate::clock::Nanos;

use super::model::*;
use super::store::*;

impl Cluster {
    /// The seed's test stack.
    pub fn deploy_seed(&mut self, now: Nanos) -> Result<(), ApiError> {
        self.create_network("test_tnet", "10.0.1.0/24", true, now)?;
        let mut svc = ServiceDef::global("test_service", &["test_tnet"]);
        svc.endpoint_mode = EndpointMode::Dnsrr;
        svc.args = ["nginx", "-g", "daemon off;"].map(String::from).to_vec();
        self.create_service(&svc, now)?;
        let mut cli = ServiceDef::replicated("test_client", 2, &["test_tnet"]);
        cli.image = "ctelfer/lb-upgrade-test-cli:latest".into();
        cli.args = ["sh", "-c", "while true; do sleep 1; done"]
            .map(String::from)
            .to_vec();
        cli.mounts = vec![("test_cliout".into(), "/out".into())];
        self.create_service(&cli, now)?;
        Ok(())
    }

    /// The seed's `exhaust_addrs` stack: a /27 and 24 replicas.
    pub fn deploy_exhaust(&mut self, now: Nanos) -> Result<(), ApiError> {
        self.create_network("ex_default", "10.0.2.0/27", false, now)?;
        let mut svc = ServiceDef::replicated("ex_service", 24, &["ex_default"]);
        svc.args = ["nginx", "-g", "daemon off;"].map(String::from).to_vec();
        self.create_service(&svc, now)?;
        Ok(())
    }
}
