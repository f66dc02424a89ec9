//! `opamp-gitops loadgen`: a simulated fleet of OpenTelemetry Collectors under the OpAMP
//! Supervisor, for the scale benchmarks and the CI smoke. It is a client of the protocol: it
//! shares the generated messages and the WebSocket framing with the server, nothing else.
//!
//! | module | owns |
//! | --- | --- |
//! | `options` | what a run is; loopback-only endpoints and source subnet, attribute spreading |
//! | `agent` | one agent's protocol state and answers, without I/O |
//! | `net` | sockets from chosen source addresses, the open-files limit, jittered backoff |
//! | `ws`, `http` | the two transports, one task per agent |
//! | `context` | what the agent tasks of one process share |
//! | `view` | the controller's view: connections, applied hashes, convergence, outages |
//! | `histogram` | HTTP request latencies |
//! | `report` | progress, events and the final report, human or JSON lines |
//! | `run` | one process's run |
//! | `children` | a run over several processes when one cannot hold enough open files |

pub mod agent;
pub mod children;
pub mod context;
pub mod histogram;
pub mod http;
pub mod net;
pub mod options;
pub mod report;
pub mod run;
pub mod view;
pub mod ws;
