//! The shop's routes: `POST /v1/orders` opens an order, `GET /v1/orders/{order_no}` shows one,
//! `GET /v1/orders?day=YYYY-MM-DD` exports the approved orders of a day (or of every day) for
//! reconciliation. Amounts are minor units, currencies ISO 4217 (978 or "EUR").

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use mps_protocol::{Amount, Currency, OrderNo};
use serde::{Deserialize, Serialize};

use super::problem;
use crate::orders::{Order, OrderBook};

/// State of the POS handlers.
pub struct PosState {
    /// The order book.
    pub book: OrderBook,
    /// Most orders in one export.
    pub export_rows_max: usize,
}

/// A currency given as its numeric code or its letters.
#[derive(Deserialize)]
#[serde(untagged)]
enum CurrencyField {
    Code(u16),
    Text(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewOrder {
    order_no: String,
    amount: u64,
    currency: CurrencyField,
}

/// An order as the shop sees it (no packet; the bank's answer and signature as received).
#[derive(Debug, Serialize)]
pub struct OrderView {
    /// Order number.
    pub order_no: String,
    /// Minor units.
    pub amount: u64,
    /// Numeric currency.
    pub currency: u16,
    /// "12.50 EUR".
    pub amount_display: String,
    /// Status name.
    pub status: &'static str,
    /// Issuer of the last packet.
    pub issuer_iin: Option<String>,
    /// ISO 8583 code.
    pub response_code: Option<String>,
    /// Auth code.
    pub auth_code: Option<String>,
    /// Issuer's transaction id.
    pub txn_id: Option<String>,
    /// Why the order is where it is.
    pub reason: Option<String>,
    /// The issuer's answer to the last reversal (00, 25, 12).
    pub reversal_code: Option<String>,
    /// Day of the approval.
    pub paid_day: Option<String>,
    /// The bank's signed answer body, exactly as received.
    pub bank_answer: Option<String>,
    /// The bank's detached JWS over it.
    pub bank_signature: Option<String>,
    /// Creation time.
    pub created_at: String,
    /// Last change.
    pub updated_at: String,
}

impl From<&Order> for OrderView {
    fn from(order: &Order) -> Self {
        Self {
            order_no: order.order_no.as_str().to_owned(),
            amount: order.amount.minor(),
            currency: order.currency.code(),
            amount_display: order.amount.display_in(order.currency),
            status: order.status.as_str(),
            issuer_iin: order.issuer_iin.map(|iin| iin.as_str().to_owned()),
            response_code: order.response_code.clone(),
            auth_code: order.auth_code.clone(),
            txn_id: order.txn_id.clone(),
            reason: order.reason.clone(),
            reversal_code: order.reversal_code.clone(),
            paid_day: order.paid_day.clone(),
            bank_answer: order.bank_answer.as_ref().map(|body| String::from_utf8_lossy(body).into_owned()),
            bank_signature: order.bank_signature.clone(),
            created_at: order.created_at.clone(),
            updated_at: order.updated_at.clone(),
        }
    }
}

/// The day's export.
#[derive(Debug, Serialize)]
pub struct Export {
    /// The day, or null for every day.
    pub day: Option<String>,
    /// Approved orders.
    pub orders: Vec<OrderView>,
    /// Total minor units per numeric currency.
    pub totals: BTreeMap<u16, u64>,
}

impl Export {
    /// Builds the export of `orders`.
    pub fn new(day: Option<String>, orders: &[Order]) -> Self {
        let mut totals = BTreeMap::new();
        for order in orders {
            let total: &mut u64 = totals.entry(order.currency.code()).or_default();
            *total = total.saturating_add(order.amount.minor());
        }
        Self { day, orders: orders.iter().map(OrderView::from).collect(), totals }
    }
}

/// Checks a day given as YYYY-MM-DD.
pub fn parse_day(text: &str) -> Option<String> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(text, format).ok().map(|_| text.to_owned())
}

fn bad_request(detail: &str) -> Response {
    problem::response(StatusCode::BAD_REQUEST, "Bad order", detail, None)
}

/// `POST /v1/orders`.
pub async fn create(State(state): State<Arc<PosState>>, body: Result<Bytes, BytesRejection>) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) => {
            return problem::response(rejection.status(), "Unreadable body", &rejection.body_text(), None);
        }
    };
    let request: NewOrder = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(error) => {
            return bad_request(&format!("the body must be {{\"order_no\",\"amount\",\"currency\"}}: {error}"));
        }
    };
    let Ok(order_no) = OrderNo::new(&request.order_no) else {
        return bad_request("order_no must be 1 to 12 printable ASCII characters, not all spaces");
    };
    let currency = match request.currency {
        CurrencyField::Code(code) => Currency::from_code(code),
        CurrencyField::Text(text) => Currency::parse(&text),
    };
    let Ok(currency) = currency else {
        return bad_request("currency must be an ISO 4217 code this build knows, like 978 or \"EUR\"");
    };
    if request.amount == 0 || i64::try_from(request.amount).is_err() {
        return bad_request("amount must be 1 to 2^63 - 1 minor units");
    }
    let amount = Amount::from_minor(request.amount);
    match state.book.call(move |book| book.create(order_no, amount, currency)).await {
        Ok(order) => {
            tracing::info!(order_no = %order.order_no, "order opened");
            (StatusCode::CREATED, Json(OrderView::from(&order))).into_response()
        }
        Err(error) => problem::book(&error),
    }
}

/// `GET /v1/orders/{order_no}`.
pub async fn show(State(state): State<Arc<PosState>>, Path(order_no): Path<String>) -> Response {
    let Ok(order_no) = OrderNo::new(&order_no) else {
        return bad_request("order_no must be 1 to 12 printable ASCII characters");
    };
    match state.book.call(move |book| book.get(&order_no)).await {
        Ok(Some(order)) => Json(OrderView::from(&order)).into_response(),
        Ok(None) => {
            problem::response(StatusCode::NOT_FOUND, "Unknown order", &format!("there is no order {order_no}"), None)
        }
        Err(error) => problem::book(&error),
    }
}

/// The export's query: `?day=YYYY-MM-DD`, or nothing for every day.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportQuery {
    /// The day.
    pub day: Option<String>,
}

/// `GET /v1/orders?day=YYYY-MM-DD`.
pub async fn export(State(state): State<Arc<PosState>>, Query(query): Query<ExportQuery>) -> Response {
    let day = match query.day.as_deref().map(parse_day) {
        None => None,
        Some(Some(day)) => Some(day),
        Some(None) => return bad_request("day must be a date like 2026-11-30"),
    };
    let limit = state.export_rows_max;
    let wanted = day.clone();
    match state.book.call(move |book| book.paid(wanted.as_deref(), limit)).await {
        Ok(orders) => Json(Export::new(day, &orders)).into_response(),
        Err(error) => problem::book(&error),
    }
}
