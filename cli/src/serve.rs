//! `mesh serve <service> [flags…]`: one service in this process, exactly as
//! its own binary runs it (same flags, same lifecycle). `mesh up` starts
//! every instance this way, so one executable is enough.

use std::process::ExitCode;

use anyhow::Context as _;

/// `mesh serve` arguments: the service and its own flags.
#[derive(clap::Args, Debug)]
pub(crate) struct ServeArgs {
    #[command(subcommand)]
    service: ServiceConfig,
}

/// Each service's own flags (its `Config`), under its Consul name.
#[derive(clap::Subcommand, Debug)]
enum ServiceConfig {
    /// The users service (mesh.users.v1.Users).
    Users(users::Config),
    /// The inventory service (mesh.inventory.v1.Inventory).
    Inventory(inventory::Config),
    /// The payments service (mesh.payments.v1.Payments).
    Payments(payments::Config),
    /// The orders service (mesh.orders.v1.Orders).
    Orders(orders::Config),
    /// The shipping service (mesh.shipping.v1.Shipping), a consumer of
    /// orders' events.
    Shipping(shipping::Config),
}

/// Sets up logging and serves until SIGTERM/SIGINT (then drains, exits 0).
pub(crate) async fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    use mesh::server::run_service;
    let (name, result) = match args.service {
        ServiceConfig::Users(config) => (
            users::IDENTITY.name,
            run_service(&users::IDENTITY, config, users::run).await,
        ),
        ServiceConfig::Inventory(config) => (
            inventory::IDENTITY.name,
            run_service(&inventory::IDENTITY, config, inventory::run).await,
        ),
        ServiceConfig::Payments(config) => (
            payments::IDENTITY.name,
            run_service(&payments::IDENTITY, config, payments::run).await,
        ),
        ServiceConfig::Orders(config) => (
            orders::IDENTITY.name,
            run_service(&orders::IDENTITY, config, orders::run).await,
        ),
        ServiceConfig::Shipping(config) => (
            shipping::IDENTITY.name,
            run_service(&shipping::IDENTITY, config, shipping::run).await,
        ),
    };
    result.with_context(|| format!("{name} stopped"))?;
    Ok(ExitCode::SUCCESS)
}
