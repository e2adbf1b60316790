//! Fixtures in the shop's services, made through any [`Channel`]: the demo
//! data of `mesh up` and what `mesh bench` needs before its run. Each helper
//! is safe to repeat.

use std::time::Duration;

use mesh::{
    client::Channel,
    proto::{
        inventory::v1::{inventory_client::InventoryClient, AddStockRequest, GetItemRequest, Item},
        users::v1::{users_client::UsersClient, CreateUserRequest, ListUsersRequest, User},
    },
};
use tonic::{Code, Request, Status};

/// Deadline of each fixture call.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Pages of ListUsers read at most while looking for an email.
const MAX_PAGES: usize = 1000;

/// A request with the fixture deadline.
pub(crate) fn request<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.set_timeout(CALL_TIMEOUT);
    request
}

/// The user with `email`: created, or (ALREADY_EXISTS) found with ListUsers.
pub(crate) async fn ensure_user(
    channel: Channel,
    email: &str,
    display_name: &str,
) -> Result<User, Status> {
    let mut users = UsersClient::new(channel);
    let created = users
        .create_user(request(CreateUserRequest {
            email: email.to_owned(),
            display_name: display_name.to_owned(),
        }))
        .await;
    match created {
        Ok(response) => Ok(response.into_inner()),
        Err(status) if status.code() == Code::AlreadyExists => {
            let mut page_token = String::new();
            for _ in 0..MAX_PAGES {
                let page = users
                    .list_users(request(ListUsersRequest {
                        page_size: 1000,
                        page_token: page_token.clone(),
                    }))
                    .await?
                    .into_inner();
                if let Some(user) = page
                    .users
                    .into_iter()
                    .find(|user| user.email.eq_ignore_ascii_case(email))
                {
                    return Ok(user);
                }
                if page.next_page_token.is_empty() {
                    break;
                }
                page_token = page.next_page_token;
            }
            Err(Status::not_found(format!(
                "{email} exists (CreateUser said ALREADY_EXISTS) but ListUsers does not list it"
            )))
        }
        Err(status) => Err(status),
    }
}

/// `sku`'s item, or `None` when inventory does not know it.
pub(crate) async fn get_item(channel: Channel, sku: &str) -> Result<Option<Item>, Status> {
    let found = InventoryClient::new(channel)
        .get_item(request(GetItemRequest {
            sku: sku.to_owned(),
        }))
        .await;
    match found {
        Ok(response) => Ok(Some(response.into_inner())),
        Err(status) if status.code() == Code::NotFound => Ok(None),
        Err(status) => Err(status),
    }
}

/// Adds `quantity` of `sku` only when inventory does not know the SKU yet (so
/// a repeat never piles stock up). Returns the item and whether it was added.
pub(crate) async fn stock_if_unknown(
    channel: Channel,
    sku: &str,
    quantity: i64,
    unit_price_cents: i64,
) -> Result<(Item, bool), Status> {
    if let Some(item) = get_item(channel.clone(), sku).await? {
        return Ok((item, false));
    }
    let item = add_stock(channel, sku, quantity, unit_price_cents).await?;
    Ok((item, true))
}

/// Tops `sku` up so that at least `at_least` units are available.
pub(crate) async fn top_up(
    channel: Channel,
    sku: &str,
    at_least: i64,
    unit_price_cents: i64,
) -> Result<Item, Status> {
    let available = get_item(channel.clone(), sku)
        .await?
        .map_or(0, |item| item.available);
    // AddStock also (re)sets the price, so call it even when nothing is missing.
    let missing = (at_least - available).max(1);
    add_stock(channel, sku, missing, unit_price_cents).await
}

/// One AddStock.
pub(crate) async fn add_stock(
    channel: Channel,
    sku: &str,
    quantity: i64,
    unit_price_cents: i64,
) -> Result<Item, Status> {
    Ok(InventoryClient::new(channel)
        .add_stock(request(AddStockRequest {
            sku: sku.to_owned(),
            quantity,
            unit_price_cents,
            currency: "EUR".into(),
        }))
        .await?
        .into_inner())
}
