'use strict';
// CartPole-v1 in JavaScript, with gymnasium's physics (classic_control/cartpole.py, Euler
// integrator) and its TimeLimit of 500 steps. The state is kept in float64 as gymnasium
// keeps it; observations are rounded to float32, as gymnasium returns them.

const GRAVITY = 9.8;
const MASS_CART = 1.0;
const MASS_POLE = 0.1;
const TOTAL_MASS = MASS_POLE + MASS_CART;
const LENGTH = 0.5; // half the pole's length
const POLE_MASS_LENGTH = MASS_POLE * LENGTH;
const FORCE_MAG = 10.0;
const TAU = 0.02; // seconds between state updates
const THETA_THRESHOLD_RADIANS = (12 * 2 * Math.PI) / 360;
const X_THRESHOLD = 2.4;

class CartPole {
  /**
   * @param {() => number} random uniform [0, 1) generator (seeded by the caller)
   * @param {number} maxEpisodeSteps the time limit (gymnasium's CartPole-v1: 500)
   */
  constructor(random, maxEpisodeSteps = 500) {
    this.random = random;
    this.maxEpisodeSteps = maxEpisodeSteps;
    this.state = null;
    this.elapsed = 0;
  }

  get observationSize() { return 4; }
  get numActions() { return 2; }

  /** Starts an episode: every state variable uniform in [-0.05, 0.05). Returns the observation. */
  reset() {
    this.state = Array.from({ length: 4 }, () => -0.05 + 0.1 * this.random());
    this.elapsed = 0;
    return this.observation();
  }

  observation() {
    return Float64Array.from(this.state, Math.fround);
  }

  /** One step: action 0 pushes left, 1 pushes right. Returns {observation, reward, terminated, truncated}. */
  step(action) {
    if (action !== 0 && action !== 1) throw new RangeError(`CartPole action must be 0 or 1, got ${action}`);
    let [x, xDot, theta, thetaDot] = this.state;
    const force = action === 1 ? FORCE_MAG : -FORCE_MAG;
    const cosTheta = Math.cos(theta);
    const sinTheta = Math.sin(theta);
    const temp = (force + POLE_MASS_LENGTH * thetaDot * thetaDot * sinTheta) / TOTAL_MASS;
    const thetaAcc = (GRAVITY * sinTheta - cosTheta * temp) /
      (LENGTH * (4.0 / 3.0 - (MASS_POLE * cosTheta * cosTheta) / TOTAL_MASS));
    const xAcc = temp - (POLE_MASS_LENGTH * thetaAcc * cosTheta) / TOTAL_MASS;
    x += TAU * xDot;
    xDot += TAU * xAcc;
    theta += TAU * thetaDot;
    thetaDot += TAU * thetaAcc;
    this.state = [x, xDot, theta, thetaDot];
    this.elapsed += 1;
    const terminated = x < -X_THRESHOLD || x > X_THRESHOLD ||
      theta < -THETA_THRESHOLD_RADIANS || theta > THETA_THRESHOLD_RADIANS;
    // gymnasium's TimeLimit: truncated when the step count reaches the limit (a terminal step may be both).
    const truncated = this.elapsed >= this.maxEpisodeSteps;
    return { observation: this.observation(), reward: 1.0, terminated, truncated };
  }
}

module.exports = { CartPole };
