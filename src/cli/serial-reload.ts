// One reload at a time, for the white's and the gray's file alike: a call while one runs is
// coalesced into exactly one more after it, so a burst of saves costs at most two loads and the
// last save always wins.
export class SerialReload {
  private running: Promise<void> | null = null;
  private again = false;

  /** settled runs after each reload; more says whether another follows at once. */
  constructor(
    private readonly reload: (why: string) => Promise<void>,
    private readonly settled: (more: boolean) => void = () => {},
  ) {}

  run(why: string): Promise<void> {
    if (this.running) {
      this.again = true;
      return this.running;
    }
    this.running = this.reload(why).finally(() => {
      this.running = null;
      this.settled(this.again);
      if (this.again) {
        this.again = false;
        void this.run('change during reload');
      }
    });
    return this.running;
  }
}
