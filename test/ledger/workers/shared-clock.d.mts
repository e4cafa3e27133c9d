export declare function fileClock(file: string): () => number;
export declare function setFileClock(file: string, ms: number): void;
