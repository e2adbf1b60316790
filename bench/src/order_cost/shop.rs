//! The four processes one PlaceOrder runs through, started from one folder
//! of binaries: users, inventory and payments, and orders (events off)
//! given their addresses. No Consul, plaintext on loopback, SQLite in the
//! shop's own folder; stopped and reaped when dropped.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use crate::{
    cpu::CpuTimes,
    events::shop::{start_service, Service},
};

/// The services, in the order [`OrderShop::cpu_times`] reports them.
pub(super) const SERVICES: [&str; 4] = ["users", "inventory", "payments", "orders"];

/// One running shop.
pub(super) struct OrderShop {
    bin: PathBuf,
    /// In [`SERVICES`] order.
    services: Vec<Service>,
}

impl OrderShop {
    /// Starts the four services of `bin` with their data and logs in `dir`.
    pub(super) fn start(bin: &Path, dir: &Path) -> anyhow::Result<Self> {
        let data = dir.join("data");
        let logs = dir.join("logs");
        std::fs::create_dir_all(&logs)?;
        let mut services = Vec::with_capacity(SERVICES.len());
        for name in &SERVICES[..3] {
            services.push(start_service(bin, &logs, name, &data, vec![])?);
        }
        let peers = vec![
            "--users-addr".to_owned(),
            services[0].addr.to_string(),
            "--inventory-addr".to_owned(),
            services[1].addr.to_string(),
            "--payments-addr".to_owned(),
            services[2].addr.to_string(),
            "--events".to_owned(),
            "off".to_owned(),
        ];
        services.push(start_service(bin, &logs, "orders", &data, peers)?);
        Ok(Self {
            bin: bin.to_owned(),
            services,
        })
    }

    /// The binaries' folder.
    pub(super) fn bin(&self) -> &Path {
        &self.bin
    }

    /// users' gRPC address.
    pub(super) fn users_addr(&self) -> SocketAddr {
        self.services[0].addr
    }

    /// inventory's gRPC address.
    pub(super) fn inventory_addr(&self) -> SocketAddr {
        self.services[1].addr
    }

    /// orders' gRPC address.
    pub(super) fn orders_addr(&self) -> SocketAddr {
        self.services[3].addr
    }

    /// Each service's CPU time so far, in [`SERVICES`] order.
    pub(super) fn cpu_times(&self) -> anyhow::Result<[CpuTimes; 4]> {
        let mut spent = [CpuTimes::default(); 4];
        for (slot, service) in spent.iter_mut().zip(&self.services) {
            *slot = crate::cpu::cpu_times(&service.pid().to_string())?;
        }
        Ok(spent)
    }

    /// Each service's context switches so far (its live threads'), in
    /// [`SERVICES`] order.
    pub(super) fn context_switches(&self) -> anyhow::Result<[u64; 4]> {
        let mut switches = [0; 4];
        for (slot, service) in switches.iter_mut().zip(&self.services) {
            *slot = crate::cpu::context_switches(&service.pid().to_string())?;
        }
        Ok(switches)
    }
}
