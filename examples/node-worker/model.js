'use strict';
// The server's "mlp_actor_critic" network, by hand: a tanh MLP body (body.0, body.2, ... are
// torch Linear layers, weight [out, in] row-major, bias [out]), a policy head (logits) and a
// value head (one number). Forward pass, and the gradient of the A3C loss by backpropagation,
// in float64.

const { product } = require('./tensors');

/**
 * The layout this worker expects for a ModelSpec, entry by entry; throws if the server's
 * layout differs (names, order or shapes), since the backprop below is written for it.
 */
function expectedLayout(model) {
  const sizes = model.hidden_sizes.map(Number);
  const observationSize = product(model.observation_shape.map(Number));
  const numActions = Number(model.num_actions);
  const layout = [];
  let width = observationSize;
  sizes.forEach((hidden, i) => {
    layout.push({ name: `body.${2 * i}.weight`, shape: [hidden, width] });
    layout.push({ name: `body.${2 * i}.bias`, shape: [hidden] });
    width = hidden;
  });
  layout.push({ name: 'policy.weight', shape: [numActions, width] });
  layout.push({ name: 'policy.bias', shape: [numActions] });
  layout.push({ name: 'value.weight', shape: [1, width] });
  layout.push({ name: 'value.bias', shape: [1] });
  return layout;
}

function checkLayout(model) {
  if (model.architecture !== 'mlp_actor_critic') {
    throw new Error(`this worker implements mlp_actor_critic, the server's model is ${model.architecture}`);
  }
  const expected = expectedLayout(model);
  const actual = model.layout.map((spec) => ({ name: spec.name, shape: spec.shape.map(Number) }));
  const show = (l) => l.map((s) => `${s.name}[${s.shape}]`).join(' ');
  if (show(actual) !== show(expected)) {
    throw new Error(`unexpected model layout: ${show(actual)}; this worker expects ${show(expected)}`);
  }
  return actual;
}

/** y = W x + b for one Linear layer, W [out, in] row-major. */
function linear(W, b, x, out) {
  const inSize = x.length;
  const y = new Float64Array(out);
  for (let o = 0; o < out; o++) {
    let s = b[o];
    const row = o * inSize;
    for (let i = 0; i < inSize; i++) s += W[row + i] * x[i];
    y[o] = s;
  }
  return y;
}

function logSoftmax(z) {
  let max = -Infinity;
  for (const v of z) max = Math.max(max, v);
  let sum = 0;
  for (const v of z) sum += Math.exp(v - max);
  const logSum = max + Math.log(sum);
  return Float64Array.from(z, (v) => v - logSum);
}

class ActorCritic {
  /** @param model RunConfig.model (a ModelSpec, as proto-loader decodes it) */
  constructor(model) {
    this.layout = checkLayout(model);
    this.hidden = model.hidden_sizes.map(Number);
    this.numActions = Number(model.num_actions);
    this.params = null; // Float64Array per layout entry, in layout order
  }

  setParameters(values) {
    if (values.length !== this.layout.length) throw new Error('wrong number of parameter tensors');
    this.params = values;
  }

  /** Forward pass for one observation; keeps the activations backprop needs. */
  forward(observation) {
    const p = this.params;
    const activations = [Float64Array.from(observation)];
    let h = activations[0];
    this.hidden.forEach((width, i) => {
      const pre = linear(p[2 * i], p[2 * i + 1], h, width);
      h = pre.map(Math.tanh);
      activations.push(h);
    });
    const k = 2 * this.hidden.length;
    const logits = linear(p[k], p[k + 1], h, this.numActions);
    const value = linear(p[k + 2], p[k + 3], h, 1)[0];
    return { activations, logits, value };
  }

  /** A softmax-policy action: a sample from softmax(logits). */
  act(observation, random) {
    const logProbs = logSoftmax(this.forward(observation).logits);
    let u = random();
    for (let a = 0; a < logProbs.length; a++) {
      u -= Math.exp(logProbs[a]);
      if (u < 0) return a;
    }
    return logProbs.length - 1;
  }

  value(observation) {
    return this.forward(observation).value;
  }

  /**
   * The A3C loss of a batch and its gradient with respect to every parameter, as
   * common/algorithms/a3c.py defines it (means over the N steps of the batch):
   *
   *   policy  = -mean(log pi(a_n | s_n) * A_n),  A_n = R_n - V(s_n) held constant
   *   value   = 0.5 * mean((R_n - V(s_n))^2)
   *   entropy = mean(-sum_a pi(a | s_n) log pi(a | s_n))
   *   total   = policy + valueLossCoef * value - entropyBeta * entropy
   *
   * Returns {loss: {total, policy, value, entropy}, gradients: Float64Array per layout entry}.
   */
  lossAndGradients(observations, actions, returns, entropyBeta, valueLossCoef) {
    const n = observations.length;
    const p = this.params;
    const grads = p.map((t) => new Float64Array(t.length));
    const L = this.hidden.length;
    const k = 2 * L;
    let policyLoss = 0;
    let valueLoss = 0;
    let entropy = 0;
    for (let s = 0; s < n; s++) {
      const { activations, logits, value } = this.forward(observations[s]);
      const logProbs = logSoftmax(logits);
      const probs = logProbs.map(Math.exp);
      const advantage = returns[s] - value;
      let h = 0;
      for (let a = 0; a < probs.length; a++) h -= probs[a] * logProbs[a];
      policyLoss += -logProbs[actions[s]] * advantage / n;
      valueLoss += 0.5 * advantage * advantage / n;
      entropy += h / n;

      // d total / d logits: policy term (1/n) A (pi - onehot(a)); entropy term,
      // since dH/dz_j = -pi_j (log pi_j + H), is +(beta/n) pi_j (log pi_j + H).
      const dLogits = new Float64Array(this.numActions);
      for (let a = 0; a < this.numActions; a++) {
        const policyGrad = (advantage * (probs[a] - (a === actions[s] ? 1 : 0))) / n;
        const entropyGrad = (entropyBeta * probs[a] * (logProbs[a] + h)) / n;
        dLogits[a] = policyGrad + entropyGrad;
      }
      // d total / d V: valueLossCoef * (V - R) / n.
      const dValue = (valueLossCoef * (value - returns[s])) / n;

      // Heads.
      const top = activations[L];
      const width = top.length;
      const dTop = new Float64Array(width);
      for (let a = 0; a < this.numActions; a++) {
        grads[k + 1][a] += dLogits[a];
        const row = a * width;
        for (let i = 0; i < width; i++) {
          grads[k][row + i] += dLogits[a] * top[i];
          dTop[i] += p[k][row + i] * dLogits[a];
        }
      }
      grads[k + 3][0] += dValue;
      for (let i = 0; i < width; i++) {
        grads[k + 2][i] += dValue * top[i];
        dTop[i] += p[k + 2][i] * dValue;
      }

      // Body, top layer down: through tanh (1 - h^2), then the Linear layer.
      let dOut = dTop;
      for (let l = L - 1; l >= 0; l--) {
        const out = activations[l + 1];
        const input = activations[l];
        const inSize = input.length;
        const W = p[2 * l];
        const dPre = Float64Array.from(dOut, (d, o) => d * (1 - out[o] * out[o]));
        const dIn = new Float64Array(inSize);
        for (let o = 0; o < dPre.length; o++) {
          grads[2 * l + 1][o] += dPre[o];
          const row = o * inSize;
          for (let i = 0; i < inSize; i++) {
            grads[2 * l][row + i] += dPre[o] * input[i];
            dIn[i] += W[row + i] * dPre[o];
          }
        }
        dOut = dIn;
      }
    }
    const total = policyLoss + valueLossCoef * valueLoss - entropyBeta * entropy;
    return { loss: { total, policy: policyLoss, value: valueLoss, entropy }, gradients: grads };
  }
}

/**
 * Discounted n-step returns, backwards over one env copy's rollout (common/algorithms/returns.py):
 *   R = bootstrap (V of the state after the last step)
 *   for t = T-1 .. 0:  R = cutValues[t] if the episode ended at t;  R = r_t + gamma * R
 * cutValues[t] is 0 for a terminal state and V(final observation) for a time-limit truncation.
 */
function nStepReturns(rewards, ended, cutValues, bootstrap, gamma) {
  const returns = new Float64Array(rewards.length);
  let running = bootstrap;
  for (let t = rewards.length - 1; t >= 0; t--) {
    if (ended[t]) running = cutValues[t];
    running = rewards[t] + gamma * running;
    returns[t] = running;
  }
  return returns;
}

module.exports = { ActorCritic, nStepReturns, expectedLayout, logSoftmax };
