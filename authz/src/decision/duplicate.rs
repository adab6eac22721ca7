//! Step 11 of the decision: the same merchant's same order already authorized in an earlier
//! session is refused (94), so a merchant cannot charge one order twice.

use mps_protocol::ResponseCode;

/// Step 11.
pub fn check(order_already_authorized: bool) -> Result<(), ResponseCode> {
    if order_already_authorized { Err(ResponseCode::Duplicate) } else { Ok(()) }
}
