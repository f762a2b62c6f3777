//! The audit of a finished job (`reshard verify JOB --audit`): every row of every table sits on
//! its owner under the new map and nowhere else, and the rows per table across all shards equal
//! the count recorded when the job was created (or a tally given by the caller).
