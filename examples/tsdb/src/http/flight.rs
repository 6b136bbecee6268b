//! InfluxDB 3's Arrow Flight query API: `DoGet` with a JSON ticket
//! `{"database", "sql_query", "query_type", "params"}`, answered by the same bounded
//! `Db::query` as `query_sql`. Every other Flight RPC is refused, naming itself.

use std::collections::HashMap;
use std::pin::Pin;

use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaResult, Ticket,
};
use datafusion::scalar::ScalarValue;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::db::{Db, Params, StoreError};

/// The one RPC served, whose request body is read whole (and bounded) before it runs.
pub const DO_GET_PATH: &str = "/arrow.flight.protocol.FlightService/DoGet";
/// The largest gRPC message tsdb decodes: a ticket is a statement and its parameters.
const MAX_MESSAGE: usize = super::MAX_BODY;

type Answer<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// The Flight service over the database.
#[derive(Clone)]
pub struct Flight {
    db: Db,
}

/// The service as tonic serves it, with decoding bounded like an HTTP body.
pub fn service(db: Db) -> FlightServiceServer<Flight> {
    FlightServiceServer::new(Flight { db }).max_decoding_message_size(MAX_MESSAGE)
}

/// The JSON ticket InfluxDB 3's clients send. The database also goes by the names
/// InfluxDB's older clients use; fields tsdb does not know are ignored, as InfluxDB does.
#[derive(serde::Deserialize)]
struct JsonTicket {
    #[serde(alias = "namespace_name", alias = "bucket", alias = "bucket-name")]
    database: String,
    sql_query: String,
    query_type: Option<String>,
    params: Option<HashMap<String, serde_json::Value>>,
}

/// The query a ticket asks for, or why it cannot run.
fn read_ticket(ticket: &[u8]) -> Result<(String, String, Params), Status> {
    let ticket: JsonTicket = serde_json::from_slice(ticket).map_err(|e| {
        Status::invalid_argument(format!(
            "the ticket is not InfluxDB 3's JSON ticket {{\"database\", \"sql_query\", \"query_type\", \"params\"}}: {e}"
        ))
    })?;
    match ticket.query_type.as_deref() {
        None | Some("sql") => {}
        Some("influxql") => {
            return Err(Status::unimplemented(
                "query_type \"influxql\" is not supported by tsdb: send SQL (query_type \"sql\")",
            ));
        }
        Some(other) => {
            return Err(Status::invalid_argument(format!(
                "query_type {other:?} is not \"sql\" (the one tsdb runs) or \"influxql\""
            )));
        }
    }
    let mut params: Vec<(String, ScalarValue)> = Vec::new();
    for (name, value) in ticket.params.unwrap_or_default() {
        let value = super::query::cell(&name, value).map_err(Status::invalid_argument)?;
        params.push((name, value));
    }
    let params = if params.is_empty() {
        Params::None
    } else {
        Params::Named(params)
    };
    Ok((ticket.database, ticket.sql_query, params))
}

/// The engine's error as a gRPC status; its message already names what was wrong.
fn status(e: StoreError) -> Status {
    match e {
        StoreError::Database(what) => Status::not_found(what),
        StoreError::Io(_) => Status::internal(e.to_string()),
        other => Status::invalid_argument(other.to_string()),
    }
}

fn refused<T>(rpc: &str) -> Result<T, Status> {
    Err(Status::unimplemented(format!(
        "{rpc} is not served by tsdb: its Flight API is DoGet with InfluxDB 3's JSON ticket"
    )))
}

#[tonic::async_trait]
impl FlightService for Flight {
    type HandshakeStream = Answer<HandshakeResponse>;
    type ListFlightsStream = Answer<FlightInfo>;
    type DoGetStream = Answer<FlightData>;
    type DoPutStream = Answer<PutResult>;
    type DoExchangeStream = Answer<FlightData>;
    type DoActionStream = Answer<arrow_flight::Result>;
    type ListActionsStream = Answer<ActionType>;

    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        let (database, sql, params) = read_ticket(&request.get_ref().ticket)?;
        // Dropped with the call when the client goes: the query stops with it.
        let output = self
            .db
            .query(&database, &sql, params)
            .await
            .map_err(status)?;
        // The result is whole and bounded by then; sending it is only encoding. Tags
        // (dictionaries) go as their strings, as InfluxDB 3 sends them.
        let batches = tokio_stream::iter(output.batches.into_iter().map(Ok));
        let frames = FlightDataEncoderBuilder::new()
            .with_schema(output.schema)
            .build(batches)
            .map(|frame| frame.map_err(Status::from));
        Ok(Response::new(Box::pin(frames)))
    }

    async fn handshake(
        &self,
        _: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        refused("Handshake")
    }

    async fn list_flights(
        &self,
        _: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        refused("ListFlights")
    }

    async fn get_flight_info(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        refused("GetFlightInfo")
    }

    async fn poll_flight_info(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        refused("PollFlightInfo")
    }

    async fn get_schema(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        refused("GetSchema")
    }

    async fn do_put(
        &self,
        _: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        refused("DoPut")
    }

    async fn do_exchange(
        &self,
        _: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        refused("DoExchange")
    }

    async fn do_action(
        &self,
        _: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        refused("DoAction")
    }

    async fn list_actions(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        refused("ListActions")
    }
}
