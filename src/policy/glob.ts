/**
 * Action globs. `*` matches any run of characters, dots included
 * (`stripe.*` matches `stripe.payment_intents.create`); nothing else is special.
 */

const ACTION_PATTERN = /^[a-z0-9_]+(?:[.:-][a-z0-9_]+)*$/;
const GLOB_PATTERN = /^[a-z0-9_*]+(?:[.:-][a-z0-9_*]+)*$/;

export const MAX_ACTION_LENGTH = 128;

export function isValidAction(action: string): boolean {
  return action.length > 0 && action.length <= MAX_ACTION_LENGTH && ACTION_PATTERN.test(action);
}

export function isValidGlob(glob: string): boolean {
  return glob.length > 0 && glob.length <= MAX_ACTION_LENGTH && GLOB_PATTERN.test(glob) && !glob.includes('**');
}

const compiled = new Map<string, RegExp>();

export function globMatches(glob: string, action: string): boolean {
  let re = compiled.get(glob);
  if (!re) {
    const body = glob
      .split('*')
      .map((part) => part.replace(/[.+?^${}()|[\]\\-]/g, '\\$&'))
      .join('.*');
    re = new RegExp(`^${body}$`);
    compiled.set(glob, re);
  }
  return re.test(action);
}

export function anyGlobMatches(globs: readonly string[], action: string): boolean {
  return globs.some((g) => globMatches(g, action));
}

/**
 * True when every action `inner` can match is also matched by `outer`.
 * Sound because `outer` has no literal `*`: if it matches the text of `inner`
 * with inner's `*` read as a character, each of those `*` lies inside a run one
 * of outer's wildcards absorbed, and any expansion only lengthens that run.
 */
export function globCovers(outer: string, inner: string): boolean {
  return globMatches(outer, inner);
}

export function globsCover(outer: readonly string[], inner: string): boolean {
  return outer.some((g) => globCovers(g, inner));
}
