//! Step 11 of the decision: the same merchant's same order already authorized in an earlier
//! session is refused (94), so a merchant cannot charge one order twice.

use mps_protocol::ResponseCode;

/// Step 11.
pub fn check(order_already_authorized: bool) -> Result<(), ResponseCode> {
    if order_already_authorized { Err(ResponseCode::Duplicate) } else { Ok(()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_order_authorized_before_is_a_duplicate() {
        assert_eq!(check(true), Err(ResponseCode::Duplicate));
        assert_eq!(check(false), Ok(()));
    }
}
