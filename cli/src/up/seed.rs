//! Demo data, made through the mesh client like any other caller: a user
//! and three SKUs. Repeatable: an existing user is looked up, stock is added
//! only for SKUs inventory does not know yet.

use mesh::{
    client::MeshClient,
    proto::{inventory::v1::Item, users::v1::User},
};

/// The demo user's email.
pub(crate) const DEMO_EMAIL: &str = "demo@example.com";
/// The demo user's name.
const DEMO_NAME: &str = "Demo User";
/// SKU, units, unit price in cents.
pub(crate) const DEMO_STOCK: [(&str, i64, i64); 3] = [
    ("WIDGET-1", 100, 1_999),
    ("GADGET-2", 50, 4_999),
    ("GIZMO-3", 200, 999),
];

/// What the demo data is.
#[derive(Debug)]
pub(crate) struct Demo {
    /// The demo user.
    pub(crate) user: User,
    /// Each SKU and whether this run added its stock.
    pub(crate) stock: Vec<(Item, bool)>,
}

/// Creates (or finds) the demo data.
pub(crate) async fn seed(mesh: &MeshClient) -> anyhow::Result<Demo> {
    let user = fixtures::ensure_user(mesh.channel("users"), DEMO_EMAIL, DEMO_NAME)
        .await
        .map_err(|status| anyhow::anyhow!("users: {}: {}", code(&status), status.message()))?;
    let mut stock = Vec::new();
    for (sku, quantity, price) in DEMO_STOCK {
        let item = fixtures::stock_if_unknown(mesh.channel("inventory"), sku, quantity, price)
            .await
            .map_err(|status| {
                anyhow::anyhow!("inventory {sku}: {}: {}", code(&status), status.message())
            })?;
        stock.push(item);
    }
    Ok(Demo { user, stock })
}

fn code(status: &tonic::Status) -> String {
    format!("{:?}", status.code())
}
