//! The RPC's response message → the JSON body: proto3 JSON with
//! lowerCamelCase names, 64-bit integers as strings, enum names, and every
//! field present (defaults included, so clients need not know proto3's
//! defaults); only the `response_body` field when the binding names one.

use bytes::Bytes;
use prost_reflect::{DynamicMessage, FieldDescriptor, SerializeOptions};

/// The JSON body of `message` (or of its `field`).
pub fn to_json(
    message: &DynamicMessage,
    field: Option<&FieldDescriptor>,
) -> Result<Bytes, serde_json::Error> {
    let options = SerializeOptions::new()
        .skip_default_fields(false)
        .stringify_64_bit_integers(true)
        .use_enum_numbers(false)
        .use_proto_field_name(false);
    let mut serializer = serde_json::Serializer::new(Vec::new());
    message.serialize_with_options(&mut serializer, &options)?;
    let whole = serializer.into_inner();
    let Some(field) = field else {
        return Ok(Bytes::from(whole));
    };
    let mut object: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&whole)?;
    let value = object
        .remove(field.json_name())
        .unwrap_or(serde_json::Value::Null);
    Ok(Bytes::from(serde_json::to_vec(&value)?))
}

#[cfg(test)]
mod tests {
    use prost::Message as _;
    use prost_reflect::DescriptorPool;

    use super::*;

    #[test]
    fn camel_case_int64_strings_enum_names_and_defaults() {
        let pool = DescriptorPool::decode(mesh::proto::FILE_DESCRIPTOR_SET).unwrap();
        let order = mesh::proto::orders::v1::Order {
            order_id: "ord_1".into(),
            total_cents: 1999,
            status: mesh::proto::orders::v1::OrderStatus::Confirmed as i32,
            ..Default::default()
        };
        let message = DynamicMessage::decode(
            pool.get_message_by_name("mesh.orders.v1.Order").unwrap(),
            order.encode_to_vec().as_slice(),
        )
        .unwrap();
        let json: serde_json::Value =
            serde_json::from_slice(&to_json(&message, None).unwrap()).unwrap();
        assert_eq!(json["orderId"], "ord_1");
        assert_eq!(json["totalCents"], "1999");
        assert_eq!(json["status"], "ORDER_STATUS_CONFIRMED");
        assert_eq!(json["paymentId"], "", "defaults are present");
        assert_eq!(json["items"], serde_json::json!([]));
        let status = pool
            .get_message_by_name("mesh.orders.v1.Order")
            .unwrap()
            .get_field_by_name("status")
            .unwrap();
        assert_eq!(
            to_json(&message, Some(&status)).unwrap(),
            "\"ORDER_STATUS_CONFIRMED\""
        );
    }
}
