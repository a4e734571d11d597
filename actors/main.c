/* Placeholder until the server's entry point lands. */
int main(void) { return 2; }
