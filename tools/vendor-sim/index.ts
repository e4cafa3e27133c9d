/**
 * vendor-sim: a local HTTP simulator of the Stripe, Twilio and Resend endpoints runcap calls,
 * with fault injection. Point the real SDKs at `sim.url` (see test/tools/vendor-sim.test.ts).
 */
export type {
  CreatedObjects,
  EmailFilter,
  Fault,
  FaultRule,
  RecordedRequest,
  SimCredentials,
  SimVendor,
  StartOptions,
  VendorSim,
} from './types.js';
export { DEFAULT_CREDENTIALS, startVendorSim } from './server.js';
export { simControl, type SimControl } from './control.js';
export { smsSegments } from './util.js';
export { pointHomeAtSim, shiftedClockEnv, simServerEnv } from './home.js';
