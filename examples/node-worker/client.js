'use strict';
// The worker's side of the wire: the service loaded from proto/ at run time, one deadline per
// call, transient failures (UNAVAILABLE, DEADLINE_EXCEEDED, CANCELLED) retried with capped, jittered
// exponential backoff, and the statuses a worker loop acts on turned into exceptions.

const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const PROTO_ROOT = path.resolve(__dirname, '..', '..', 'proto');
const PROTO_FILE = 'asyncrl/v1/parameter_server.proto';
const CURRENT_VERSION_KEY = 'asyncrl-current-version';
// UNAVAILABLE and DEADLINE_EXCEEDED are the contract's transient codes. A server shutting down
// (SIGTERM, a restart) also fails calls it has received but not yet started with CANCELLED;
// this worker never cancels its own calls, so CANCELLED can only mean that, and is retried too.
const TRANSIENT = new Set([grpc.status.UNAVAILABLE, grpc.status.DEADLINE_EXCEEDED, grpc.status.CANCELLED]);

/** The server does not know this worker id (it restarted): register again. */
class UnknownWorker extends Error {}
/** The push was refused as too stale (ABORTED): pull and recompute. */
class StaleGradients extends Error {
  constructor(message, currentVersion) {
    super(message);
    this.currentVersion = currentVersion;
  }
}
/** A status that retrying cannot fix (INVALID_ARGUMENT, FAILED_PRECONDITION, RESOURCE_EXHAUSTED, ...). */
class FatalStatus extends Error {
  constructor(method, error) {
    super(`${method}: ${grpc.status[error.code]} (${error.details})`);
    this.code = error.code;
  }
}
/** Transient failures went on for longer than the worker is willing to wait. */
class GaveUp extends Error {}
/** The worker was asked to stop (SIGINT/SIGTERM) while waiting. */
class Stopped extends Error {}

function loadService() {
  const definition = protoLoader.loadSync(PROTO_FILE, {
    includeDirs: [PROTO_ROOT],
    keepCase: true, // field names as in the .proto (worker_id, not workerId)
    longs: String, // int64/uint64 as decimal strings: no precision lost; convert where needed
    enums: String, // enum values as their names, e.g. 'DTYPE_FLOAT32'
    defaults: true, // unset fields read as their proto3 defaults
    oneofs: true,
  });
  return grpc.loadPackageDefinition(definition).asyncrl.v1.ParameterServerService;
}

class Client {
  /**
   * @param {string} address host:port
   * @param {{deadlineMs: number, maxBackoffMs: number, retryForMs: number, log: Function, stopping: () => boolean,
   *          sleep: (ms: number) => Promise<void>, random: () => number,
   *          security: {token: string, ca: Buffer|null, clientCert: Buffer|null, clientKey: Buffer|null}}} options
   */
  constructor(address, options) {
    this.address = address;
    this.options = options;
    const security = options.security || { token: '', ca: null, clientCert: null, clientKey: null };
    // TLS when a CA is given (with a client certificate for mutual TLS); the bearer token, when given, goes
    // in every call's metadata (not as call credentials, which grpc-js sends over TLS only).
    this.credentials = security.ca
      ? grpc.credentials.createSsl(security.ca, security.clientKey, security.clientCert)
      : grpc.credentials.createInsecure();
    this.metadata = new grpc.Metadata();
    if (security.token) this.metadata.set('authorization', `Bearer ${security.token}`);
    this.Service = loadService();
    this.retries = 0;
    this.connect(64 * 2 ** 20);
  }

  /** (Re)creates the channel with both message limits raised to maxBytes (RunConfig.max_message_bytes). */
  connect(maxBytes) {
    if (this.stub) this.stub.close();
    this.maxBytes = maxBytes;
    this.stub = new this.Service(this.address, this.credentials, {
      'grpc.max_send_message_length': maxBytes,
      'grpc.max_receive_message_length': maxBytes,
      // The channel's own reconnect backoff (default: 1 s growing to 120 s) would hold a restarted
      // server at bay long after our retries resume: keep it within the worker's retry backoff.
      'grpc.initial_reconnect_backoff_ms': Math.min(100, this.options.maxBackoffMs),
      'grpc.max_reconnect_backoff_ms': Math.max(100, this.options.maxBackoffMs),
    });
  }

  callOnce(method, request) {
    return new Promise((resolve, reject) => {
      const deadline = new Date(Date.now() + this.options.deadlineMs);
      this.stub[method](request, this.metadata, { deadline }, (error, reply) => (error ? reject(error) : resolve(reply)));
    });
  }

  /** One RPC with a deadline; the same request is re-sent on transient failures, with backoff and jitter. */
  async call(method, request) {
    let delay = 100;
    const started = Date.now();
    for (;;) {
      try {
        return await this.callOnce(method, request);
      } catch (error) {
        if (error.code === grpc.status.NOT_FOUND) throw new UnknownWorker(error.details);
        if (error.code === grpc.status.ABORTED) {
          const current = error.metadata ? error.metadata.get(CURRENT_VERSION_KEY)[0] : undefined;
          throw new StaleGradients(error.details, current === undefined ? undefined : Number(current));
        }
        if (!TRANSIENT.has(error.code)) throw new FatalStatus(method, error);
        if (Date.now() - started > this.options.retryForMs) {
          throw new GaveUp(`${method}: still ${grpc.status[error.code]} after ${this.options.retryForMs / 1000}s of retries`);
        }
        const wait = delay / 2 + (this.options.random() * delay) / 2; // uniform in [delay/2, delay)
        this.retries += 1;
        this.options.log(`${method}: ${grpc.status[error.code]} (${error.details}); retrying in ${(wait / 1000).toFixed(2)}s`);
        await this.options.sleep(wait);
        if (this.options.stopping()) throw new Stopped();
        delay = Math.min(delay * 2, this.options.maxBackoffMs);
      }
    }
  }

  close() {
    if (this.stub) this.stub.close();
  }
}

module.exports = { Client, UnknownWorker, StaleGradients, FatalStatus, GaveUp, Stopped, CURRENT_VERSION_KEY };
