#!/usr/bin/env node
'use strict';
// An asyncrl A3C worker in Node.js. It speaks only the wire contract in
// proto/asyncrl/v1/parameter_server.proto (loaded at run time) and computes real A3C
// gradients on CartPole-v1, both written here in JavaScript:
//
//   RegisterWorker -> PullWeights -> loop { t_max env steps, backprop the A3C loss,
//   PushGradients (the reply carries the new weights) } until a reply says training_done.
//
//   node worker.js --server HOST:PORT [--max-pushes N] [--name NAME]

const fs = require('fs');
const os = require('os');
const { Client, UnknownWorker, StaleGradients, GaveUp, Stopped } = require('./client');
const { CartPole } = require('./cartpole');
const { ActorCritic, nStepReturns } = require('./model');
const { decodeLayout, encodeFloat32 } = require('./tensors');
const { makeRandom } = require('./rng');

const USAGE = `usage: node worker.js --server HOST:PORT [options]

  --server HOST:PORT      the parameter server (default: $ASYNCRL_SERVER, else 127.0.0.1:50051)
  --name NAME             this worker's name (default: node-<hostname>-<pid>)
  --max-pushes N          stop (exit 0) after N applied pushes (default: 0, until training is done)
  --deadline SECONDS      deadline of every call (default: 10)
  --max-backoff SECONDS   longest wait between retries of a transient failure (default: 5)
  --retry-for SECONDS     give up (exit 3) after retrying one call this long (default: 120)
  --auth-token-file PATH  send the bearer token in PATH with every call ($ASYNCRL_AUTH_TOKEN_FILE)
  --tls-ca PATH           connect over TLS, verifying the server with these PEM CA certificates ($ASYNCRL_TLS_CA)
  --tls-client-cert PATH  with --tls-client-key: the PEM certificate for a server that requires mutual TLS
  --tls-client-key PATH   ($ASYNCRL_TLS_CLIENT_CERT, $ASYNCRL_TLS_CLIENT_KEY)
  --log-every N           a progress line every N pushes (default: 50)
debugging and tests:
  --stale-every N         every N-th push claims a base version too old for the server's
                          max_staleness, to exercise the ABORTED path (default: 0, never)
  --max-episode-steps N   CartPole's time limit (default: 500, as CartPole-v1)
  --dump PATH             append the first --dump-pushes rollouts, weights and gradients to PATH (JSON lines)
  --dump-pushes N         (default: 20)

Exit status: 0 when training is done, --max-pushes is reached or on SIGINT/SIGTERM;
2 on a status that retrying cannot fix (INVALID_ARGUMENT, FAILED_PRECONDITION, ...) or a bad
model layout; 3 when a transient failure outlasts --retry-for.`;

function parseArgs(argv) {
  const options = {
    server: process.env.ASYNCRL_SERVER || '127.0.0.1:50051',
    name: `node-${os.hostname()}-${process.pid}`,
    maxPushes: 0,
    deadline: 10,
    maxBackoff: 5,
    retryFor: 120,
    logEvery: 50,
    staleEvery: 0,
    maxEpisodeSteps: 500,
    dump: '',
    dumpPushes: 20,
    authTokenFile: process.env.ASYNCRL_AUTH_TOKEN_FILE || '',
    tlsCa: process.env.ASYNCRL_TLS_CA || '',
    tlsClientCert: process.env.ASYNCRL_TLS_CLIENT_CERT || '',
    tlsClientKey: process.env.ASYNCRL_TLS_CLIENT_KEY || '',
  };
  const numeric = {
    '--max-pushes': 'maxPushes', '--deadline': 'deadline', '--max-backoff': 'maxBackoff', '--retry-for': 'retryFor',
    '--log-every': 'logEvery', '--stale-every': 'staleEvery', '--max-episode-steps': 'maxEpisodeSteps',
    '--dump-pushes': 'dumpPushes',
  };
  const strings = {
    '--server': 'server', '--name': 'name', '--dump': 'dump', '--auth-token-file': 'authTokenFile', '--tls-ca': 'tlsCa',
    '--tls-client-cert': 'tlsClientCert', '--tls-client-key': 'tlsClientKey',
  };
  for (let i = 0; i < argv.length; i++) {
    let flag = argv[i];
    let value;
    if (flag === '-h' || flag === '--help') {
      console.log(USAGE);
      process.exit(0);
    }
    if (flag.includes('=')) [flag, value] = [flag.slice(0, flag.indexOf('=')), flag.slice(flag.indexOf('=') + 1)];
    if (!(flag in numeric) && !(flag in strings)) usageError(`unknown option ${flag}`);
    if (value === undefined) {
      if (i + 1 >= argv.length) usageError(`${flag} needs a value`);
      value = argv[++i];
    }
    if (flag in strings) {
      options[strings[flag]] = value;
    } else {
      const number = Number(value);
      if (!Number.isFinite(number) || number < 0) usageError(`${flag} must be a number >= 0, got ${value}`);
      options[numeric[flag]] = number;
    }
  }
  if (!/^[^\s]+:\d+$/.test(options.server)) usageError(`--server must be HOST:PORT, got ${options.server}`);
  if (options.maxEpisodeSteps < 1) usageError('--max-episode-steps must be >= 1');
  if (!options.tlsClientCert !== !options.tlsClientKey) usageError('--tls-client-cert and --tls-client-key go together');
  if (options.tlsClientCert && !options.tlsCa) usageError('a client certificate is for TLS: set --tls-ca too');
  const read = (flag, path) => {
    try {
      return fs.readFileSync(path);
    } catch (error) {
      return usageError(`${flag} ${path}: cannot read it (${error.code})`);
    }
  };
  options.security = {
    token: options.authTokenFile ? read('--auth-token-file', options.authTokenFile).toString().trim() : '',
    ca: options.tlsCa ? read('--tls-ca', options.tlsCa) : null,
    clientCert: options.tlsClientCert ? read('--tls-client-cert', options.tlsClientCert) : null,
    clientKey: options.tlsClientKey ? read('--tls-client-key', options.tlsClientKey) : null,
  };
  return options;
}

function usageError(message) {
  console.error(`${message}\n\n${USAGE}`);
  process.exit(64);
}

function log(message) {
  console.log(`[${new Date().toISOString()}] ${message}`);
}

class Worker {
  constructor(options) {
    this.options = options;
    this.stopRequested = false;
    this.wake = null;
    this.jitter = Math.random; // backoff jitter need not be reproducible
    this.client = new Client(options.server, {
      deadlineMs: options.deadline * 1000,
      maxBackoffMs: options.maxBackoff * 1000,
      retryForMs: options.retryFor * 1000,
      security: options.security,
      log,
      random: this.jitter,
      stopping: () => this.stopRequested,
      sleep: (ms) => this.sleep(ms),
    });
    this.model = null;
    this.env = null;
    this.version = -1; // the version of the weights this worker holds (-1: none)
    this.sequenceNumber = 0;
    this.pendingEpisodes = [];
    this.recentReturns = [];
    this.stats = { pushes: 0, aborted: 0, injected_stale: 0, registrations: 0, retries: 0, frames: 0, episodes: 0 };
    this.pushesSinceStale = 0;
    this.dumped = 0;
  }

  sleep(ms) {
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, ms);
      this.wake = () => { clearTimeout(timer); resolve(); };
    });
  }

  stop() {
    this.stopRequested = true;
    if (this.wake) this.wake();
  }

  async register() {
    const reply = await this.client.call('RegisterWorker', {
      name: this.options.name,
      num_envs: 1,
      accepted_dtypes: ['DTYPE_FLOAT32'],
      algorithm: 'ALGORITHM_A3C',
    });
    this.stats.registrations += 1;
    this.workerId = reply.worker_id;
    this.workerSecret = reply.worker_secret; // a Buffer; every later call naming workerId carries it
    this.config = reply.config;
    this.sequenceNumber = 0; // a new id starts a new sequence
    this.version = -1; // a restarted server may hold other weights: pull before pushing
    const maxBytes = Number(this.config.max_message_bytes);
    if (maxBytes > 0 && maxBytes !== this.client.maxBytes) this.client.connect(maxBytes);
    if (this.config.algorithm !== 'ALGORITHM_A3C') throw new Error(`server runs ${this.config.algorithm}, not A3C`);
    if (this.config.env_id !== 'CartPole-v1') throw new Error(`this worker implements CartPole-v1, the run uses ${this.config.env_id}`);
    if (this.model === null) {
      this.model = new ActorCritic(this.config.model); // throws on a layout it was not written for
      const seed = BigInt(reply.seed);
      this.env = new CartPole(makeRandom(seed, 1), this.options.maxEpisodeSteps);
      this.actionRandom = makeRandom(seed, 2);
      this.observation = this.env.reset();
      this.episodeReturn = 0;
      this.episodeLength = 0;
    }
    const c = this.config;
    log(`registered as worker ${this.workerId} (seed ${reply.seed}) for ${c.algorithm} on ${c.env_id}: ` +
      `gamma=${c.gamma.toPrecision(6)} t_max=${c.t_max} entropy_beta=${c.entropy_beta.toPrecision(6)} ` +
      `value_loss_coef=${c.value_loss_coef.toPrecision(6)} max_frames=${c.max_frames} max_staleness=${c.max_staleness} ` +
      `max_message_bytes=${c.max_message_bytes}`);
    log(`layout: ${c.model.layout.map((s) => `${s.name}[${s.shape.join(',')}]`).join(' ')}`);
  }

  /** Loads a reply's weights (if it carries any); returns whether training is over. */
  sync(reply, what) {
    if (reply.parameters.length > 0) {
      this.model.setParameters(decodeLayout(reply.parameters, this.config.model.layout, `${what} weights`));
      this.version = Number(reply.version);
    }
    return reply.training_done;
  }

  async pull() {
    const reply = await this.client.call('PullWeights', {
      worker_id: this.workerId,
      worker_secret: this.workerSecret,
      have_version: this.version,
      dtype: 'DTYPE_FLOAT32',
      have_target_version: -1,
    });
    const done = this.sync(reply, 'pulled');
    if (reply.parameters.length === 0 && Number(reply.version) !== this.version) {
      throw new Error(`pull returned no weights for version ${reply.version} while holding ${this.version}`);
    }
    log(`pulled: holding version ${this.version} (server version ${reply.version}, T=${reply.global_frames})`);
    return done;
  }

  /** t_max steps of the env with the current policy, and the A3C loss's gradients on them. */
  rolloutAndGradients() {
    const tMax = Number(this.config.t_max);
    const gamma = this.config.gamma;
    const observations = [];
    const actions = [];
    const rewards = [];
    const terminated = [];
    const truncated = [];
    const finalObservations = [];
    for (let t = 0; t < tMax; t++) {
      const observation = this.observation;
      const action = this.model.act(observation, this.actionRandom);
      const step = this.env.step(action);
      observations.push(observation);
      actions.push(action);
      rewards.push(step.reward);
      this.episodeReturn += step.reward;
      this.episodeLength += 1;
      const cut = step.truncated && !step.terminated; // a terminal state wins: nothing to bootstrap from
      terminated.push(step.terminated);
      truncated.push(cut);
      finalObservations.push(cut ? step.observation : null);
      if (step.terminated || step.truncated) {
        this.pendingEpisodes.push({ episode_return: this.episodeReturn, length: this.episodeLength });
        this.recentReturns.push(this.episodeReturn);
        if (this.recentReturns.length > 20) this.recentReturns.shift();
        this.stats.episodes += 1;
        this.episodeReturn = 0;
        this.episodeLength = 0;
        this.observation = this.env.reset();
      } else {
        this.observation = step.observation;
      }
    }
    const ended = terminated.map((term, t) => term || truncated[t]);
    const cutValues = finalObservations.map((o) => (o === null ? 0 : this.model.value(o)));
    const bootstrap = this.model.value(this.observation);
    const returns = nStepReturns(rewards, ended, cutValues, bootstrap, gamma);
    const { loss, gradients } = this.model.lossAndGradients(
      observations, actions, returns, this.config.entropy_beta, this.config.value_loss_coef);
    const rollout = { observations, actions, rewards, terminated, truncated, finalObservations, nextObservation: this.observation };
    return { frames: tMax, loss, gradients, rollout };
  }

  dump(base, rollout, loss, gradients) {
    if (!this.options.dump || this.dumped >= this.options.dumpPushes) return;
    this.dumped += 1;
    const plain = (a) => Array.from(a);
    fs.appendFileSync(this.options.dump, JSON.stringify({
      worker_id: this.workerId,
      weights_version: this.version,
      base_version: base,
      weights: this.model.params.map(plain),
      observations: rollout.observations.map(plain),
      actions: rollout.actions,
      rewards: rollout.rewards,
      terminated: rollout.terminated,
      truncated: rollout.truncated,
      final_observations: rollout.finalObservations.map((o) => (o === null ? [0, 0, 0, 0] : plain(o))),
      next_observation: plain(rollout.nextObservation),
      gamma: this.config.gamma,
      loss,
      gradients: gradients.map(plain),
    }) + '\n');
  }

  /** The base version to claim: the one the gradients were computed against, or, to test ABORTED, a stale one. */
  baseVersion() {
    const staleness = Number(this.config.max_staleness);
    if (this.options.staleEvery > 0 && this.pushesSinceStale >= this.options.staleEvery && this.version > staleness) {
      this.pushesSinceStale = 0;
      this.stats.injected_stale += 1;
      const stale = this.version - staleness - 1;
      log(`debug: claiming base version ${stale} instead of ${this.version} (max_staleness ${staleness}): expect ABORTED`);
      return stale;
    }
    return this.version;
  }

  /** One update: roll out, backprop, push; the reply carries the new weights. Returns whether training is over. */
  async step() {
    if (this.version < 0 && (await this.pull())) return true;
    const { frames, loss, gradients, rollout } = this.rolloutAndGradients();
    for (const [i, g] of gradients.entries()) {
      if (!g.every(Number.isFinite)) throw new Error(`gradient ${this.config.model.layout[i].name} is not finite`);
    }
    const base = this.baseVersion();
    this.dump(base, rollout, loss, gradients);
    this.sequenceNumber += 1; // a new push; retries inside client.call reuse the whole request, number included
    const request = {
      worker_id: this.workerId,
      worker_secret: this.workerSecret,
      base_version: base,
      sequence_number: this.sequenceNumber,
      frames,
      gradients: this.config.model.layout.map((spec, i) => encodeFloat32(spec.name, spec.shape.map(Number), gradients[i])),
      episodes: this.pendingEpisodes,
      reply_weights_dtype: 'DTYPE_FLOAT32',
    };
    const reply = await this.client.call('PushGradients', request);
    this.pendingEpisodes = [];
    this.stats.pushes += 1;
    this.stats.frames += frames;
    this.pushesSinceStale += 1;
    if (base !== this.version) log(`BUG: a push with stale base version ${base} was applied`);
    const heldBefore = this.version;
    const done = this.sync(reply, 'reply');
    if (!done && reply.parameters.length === 0) this.version = -1; // no weights came back: pull before the next push
    if (this.stats.pushes % this.options.logEvery === 0 || done) {
      const mean = this.recentReturns.length
        ? (this.recentReturns.reduce((a, b) => a + b, 0) / this.recentReturns.length).toFixed(1) : 'n/a';
      log(`push ${this.stats.pushes} (seq ${this.sequenceNumber}, base ${heldBefore}): server version ${reply.version} ` +
        `T=${reply.global_frames} loss=${loss.total.toFixed(4)} (policy ${loss.policy.toFixed(4)} value ${loss.value.toFixed(4)} ` +
        `entropy ${loss.entropy.toFixed(4)}) episodes=${this.stats.episodes} mean_return_20=${mean}`);
    }
    return done;
  }

  async run() {
    try {
      await this.register();
      while (!this.stopRequested) {
        if (this.options.maxPushes > 0 && this.stats.pushes >= this.options.maxPushes) {
          log(`reached --max-pushes ${this.options.maxPushes}; exiting`);
          return this.finish(0);
        }
        try {
          if (await this.step()) {
            log(`server says training is over after ${this.stats.pushes} pushes; exiting`);
            return this.finish(0);
          }
        } catch (error) {
          if (error instanceof UnknownWorker) {
            log(`server no longer knows worker ${this.workerId} (${error.message}); registering again`);
            await this.register();
          } else if (error instanceof StaleGradients) {
            this.stats.aborted += 1;
            this.sequenceNumber -= 1; // not applied: the server takes exactly one above the last applied push next
            log(`push refused as stale (ABORTED, server at version ${error.currentVersion}): pulling and recomputing`);
            if (await this.pull()) {
              log('server says training is over; exiting');
              return this.finish(0);
            }
          } else {
            throw error;
          }
        }
      }
      log('stopped by signal');
      return this.finish(0);
    } catch (error) {
      if (error instanceof Stopped) return this.finish(0);
      log(`error: ${error.message}`);
      return this.finish(error instanceof GaveUp ? 3 : 2);
    } finally {
      this.client.close();
    }
  }

  finish(code) {
    this.stats.retries = this.client.retries;
    log(`done: ${JSON.stringify({ worker_id: this.workerId, exit: code, ...this.stats })}`);
    return code;
  }
}

async function main() {
  const options = parseArgs(process.argv.slice(2));
  const worker = new Worker(options);
  process.on('SIGINT', () => worker.stop());
  process.on('SIGTERM', () => worker.stop());
  process.exitCode = await worker.run();
}

if (require.main === module) {
  main().catch((error) => {
    console.error(error);
    process.exit(1);
  });
}

module.exports = { Worker, parseArgs };
