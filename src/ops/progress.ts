/** How long-running operations report progress; the front end decides how to show it. */

/** Called with the bytes of the virtual disk handled so far, out of `total`; `done` never decreases. */
export type ProgressCallback = (done: number, total: number) => void;
